"""The Salesforce org simulator over real HTTPS, driven by requests and by the
real simple-salesforce client (direct mode)."""
from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, request
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceResourceNotFound

from crm_enrich.sandbox.common import ServedApp, ensure_certificates
from crm_enrich.sandbox.salesforce import (
    SalesforceSimConfig,
    create_salesforce_app,
    id_suffix,
    parse_ack,
    to_id18,
)

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
OM = "http://soap.sforce.com/2005/09/outbound"
SF = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    "<soapenv:Body><notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\">"
    "<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
)
WRONG_ACK = ACK.replace("notificationsResponse", "notifications")


def wait_for(cond, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met before deadline")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return ensure_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def org(certs, monkeypatch):
    """Factory: org(**config) → Org helper with a served simulator."""
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override session.verify, and this
    # environment sets them to the system bundle: point them at the sandbox CA instead.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs.ca_pem))
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    started = []

    class Org:
        def __init__(self, **cfg):
            self.app = create_salesforce_app(SalesforceSimConfig(**cfg))
            self.state = self.app.extensions["salesforce_sim"]
            self.served = ServedApp(self.app, certs).start()
            self.url = self.served.url
            self.http = requests.Session()
            self.http.verify = str(certs.ca_pem)
            started.append(self)

        def control(self, method, path, **kw):
            resp = self.http.request(method, f"{self.url}/_sandbox/salesforce{path}", timeout=5, **kw)
            assert resp.status_code < 300, resp.text
            return resp.json() if resp.content else None

        def token(self):
            resp = self.http.post(f"{self.url}/services/oauth2/token", data={"grant_type": "client_credentials"},
                                  auth=("sandbox-client-id", "sandbox-client-secret"), timeout=5)
            assert resp.status_code == 200, resp.text
            return resp.json()

        def client(self, token=None):
            token = token or self.token()
            return Salesforce(instance_url=token["instance_url"], session_id=token["access_token"],
                              session=self.http)

        def create(self, obj, *records):
            return self.control("POST", "/records", json={"object": obj, "records": list(records)})["ids"]

    yield Org
    for o in started:
        o.state.stop()
        o.served.stop()


# ---------------------------------------------------------------- ids, ack


def test_id_checksum_matches_known_org_id():
    assert id_suffix("00D5g000004XyZa") == "EAK"
    assert to_id18("0035g00000QwErT") == "0035g00000QwErTAAV"


def test_parse_ack_is_strict():
    assert parse_ack(ACK.encode()) == (True, None)
    assert parse_ack(WRONG_ACK.encode())[0] is False
    assert parse_ack(b"OK")[0] is False
    assert parse_ack(ACK.replace(">true<", ">false<").encode())[0] is False


# ---------------------------------------------------------------- auth


def test_client_credentials_token_and_errors(org):
    o = org()
    tok = o.token()
    assert tok["instance_url"] == o.url
    assert tok["token_type"] == "Bearer" and tok["access_token"].startswith("00D5g000004XyZa!")
    assert tok["id"].startswith(f"{o.url}/id/00D5g000004XyZaEAK/005")
    # form-field credentials work as well
    r = o.http.post(f"{o.url}/services/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": "sandbox-client-id",
        "client_secret": "sandbox-client-secret"})
    assert r.status_code == 200
    r = o.http.post(f"{o.url}/services/oauth2/token", data={"grant_type": "client_credentials"},
                    auth=("sandbox-client-id", "wrong"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"
    assert o.control("GET", "/usage")["tokens_issued"] == 2


def test_jwt_bearer_token(org, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = tmp_path / "jwt-pub.pem"
    pub.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    o = org(jwt_public_key_pem=str(pub))

    def assertion(signing_key=key, **claims):
        payload = {"iss": "sandbox-client-id", "sub": "integration@sandbox.example",
                   "aud": "https://login.salesforce.com", "exp": int(time.time()) + 180, **claims}
        pem = signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        return jwt.encode(payload, pem, algorithm="RS256")

    def post(a):
        return o.http.post(f"{o.url}/services/oauth2/token", data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": a})

    r = post(assertion())
    assert r.status_code == 200, r.text
    sf = o.client(r.json())
    assert sf.limits()["DailyApiRequests"]["Max"] == 15000

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert post(assertion(signing_key=other)).json()["error"] == "invalid_grant"
    assert post(assertion(sub="someone@else.example")).json()["error"] == "invalid_grant"
    assert post(assertion(exp=int(time.time()) - 10)).json()["error"] == "invalid_grant"
    assert post(assertion(iss="other-client")).json()["error"] == "invalid_client"


def test_expired_sessions_and_always_401(org):
    o = org()
    tok = o.token()
    sf = o.client(tok)
    assert sf.limits()
    o.control("POST", "/expire-sessions")
    r = o.http.get(f"{o.url}/services/data/v59.0/limits/",
                   headers={"Authorization": f"Bearer {tok['access_token']}"})
    assert r.status_code == 401
    assert r.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    with pytest.raises(SalesforceExpiredSession):
        sf.limits()

    o.control("POST", "/token-mode", json={"mode": "always_401"})
    fresh = o.token()
    r = o.http.get(f"{o.url}/services/data/v62.0/limits/",
                   headers={"Authorization": f"Bearer {fresh['access_token']}"})
    assert r.status_code == 401 and r.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    o.control("POST", "/token-mode", json={"mode": "normal"})
    assert o.client(fresh).limits()


# ---------------------------------------------------------------- records


def test_get_patch_record_and_limit_header(org):
    o = org()
    (cid,) = o.create("Contact", {"FirstName": "Dana", "LastName": "Rivers", "Email": "dana@example.org"})
    assert len(cid) == 18 and cid.startswith("003") and cid == to_id18(cid[:15])
    tok = o.token()
    hdrs = {"Authorization": f"Bearer {tok['access_token']}"}

    r1 = o.http.get(f"{o.url}/services/data/v59.0/sobjects/Contact/{cid}", headers=hdrs)
    r2 = o.http.get(f"{o.url}/services/data/v66.0/sobjects/Contact/{cid[:15]}", headers=hdrs)
    assert r1.status_code == r2.status_code == 200
    used1 = int(r1.headers["Sforce-Limit-Info"].split("=")[1].split("/")[0])
    assert r2.headers["Sforce-Limit-Info"] == f"api-usage={used1 + 1}/15000"
    body = r1.json()
    assert body["attributes"] == {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{cid}"}
    assert body["Email"] == "dana@example.org" and body["Title"] is None
    assert body["CreatedDate"].endswith("+0000")

    sf = o.client(tok)
    contact = sf.Contact
    assert contact.update(cid, {"Title": "VP Engineering", "Enriched_At__c": "2026-03-02T14:06:40.000Z"}) == 204
    assert contact.api_usage["api-usage"].used == used1 + 2
    got = sf.Contact.get(cid)
    assert got["Title"] == "VP Engineering" and got["Enriched_At__c"] == "2026-03-02T14:06:40.000+0000"

    view = o.control("GET", f"/records/Contact/{cid}")
    assert view["deleted"] is False
    assert view["writes"][0]["via"] == "sobject"
    assert view["writes"][0]["fields"]["Title"] == "VP Engineering"
    rec = view["record"]
    assert rec["LastModifiedById"] == o.state.integration_user_id
    assert rec["CreatedById"] == o.state.human_user_id != o.state.integration_user_id
    assert o.control("GET", "/usage")["api_used"] == used1 + 3

    # REST create, validation errors, describe
    created = sf.Contact.create({"LastName": "Okafor"})
    assert created["success"] and created["id"].startswith("003")
    assert o.control("GET", f"/records/Contact/{created['id']}")["record"]["CreatedById"] == \
        o.state.integration_user_id
    bad = o.http.patch(f"{o.url}/services/data/v59.0/sobjects/Contact/{cid}", headers=hdrs,
                       json={"Bogus__c": 1})
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Bogus__c' on entity 'Contact'" in bad.json()[0]["message"]
    long = o.http.patch(f"{o.url}/services/data/v59.0/sobjects/Contact/{cid}", headers=hdrs,
                        json={"Title": "x" * 129})
    assert long.json()[0]["errorCode"] == "STRING_TOO_LONG"
    desc = sf.Contact.describe()
    fields = {f["name"]: f for f in desc["fields"]}
    assert fields["Title"]["length"] == 128 and fields["Title"]["type"] == "string"
    assert fields["CreatedDate"]["updateable"] is False

    # single-record fault, then delete → ENTITY_IS_DELETED; unknown → NOT_FOUND
    o.control("POST", "/record-faults", json={"id": cid, "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                              "message": "nope", "times": 1})
    r = o.http.patch(f"{o.url}/services/data/v59.0/sobjects/Contact/{cid}", headers=hdrs, json={"Title": "A"})
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    o.control("POST", f"/records/Contact/{cid}/delete")
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Contact.update(cid, {"Title": "A"})
    assert exc.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"
    r = o.http.get(f"{o.url}/services/data/v59.0/sobjects/Contact/0035g00000ZZZZZ", headers=hdrs)
    assert r.status_code == 404 and r.json()[0]["errorCode"] == "NOT_FOUND"


def test_request_limit_exceeded(org):
    o = org()
    sf = o.client()
    o.control("POST", "/usage", json={"used": 99, "allocation": 100})
    assert sf.limits()["DailyApiRequests"] == {"Max": 100, "Remaining": 0}
    r = o.http.get(f"{o.url}/services/data/v59.0/limits/", headers={"Authorization": f"Bearer {sf.session_id}"})
    assert r.status_code == 403
    assert r.json() == [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]
    assert r.headers["Sforce-Limit-Info"] == "api-usage=100/100"


def test_soql_id_in_with_paging(org):
    o = org(query_page_size=2)
    ids = o.create("Contact", *[{"LastName": f"L{i}", "Email": f"p{i}@example.org" if i % 2 else None}
                                for i in range(6)])
    o.control("POST", f"/records/Contact/{ids[4]}/delete")
    sf = o.client()
    wanted = [ids[0], ids[1][:15], ids[2], ids[3], ids[4]]  # one 15-char form, one deleted
    soql = "SELECT Id, LastName FROM Contact WHERE Id IN ({}) ORDER BY LastName".format(
        ", ".join(f"'{i}'" for i in wanted))
    first = sf.query(soql)
    assert first["totalSize"] == 4 and first["done"] is False and len(first["records"]) == 2
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/")
    assert first["records"][0]["attributes"]["type"] == "Contact"
    everything = sf.query_all(soql)
    assert [r["Id"] for r in everything["records"]] == ids[:4]
    assert list(everything["records"][0].keys()) == ["attributes", "Id", "LastName"]

    with_email = sf.query_all("SELECT Id FROM Contact WHERE Email != null AND LastName = 'l1'")
    assert [r["Id"] for r in with_email["records"]] == [ids[1]]
    no_email = sf.query_all("SELECT Id FROM Contact WHERE Email = null LIMIT 2")
    assert [r["Id"] for r in no_email["records"]] == [ids[0], ids[2]]

    r = o.http.get(f"{o.url}/services/data/v59.0/query/", params={"q": "SELECT Id FROM Contact WHERE"},
                   headers={"Authorization": f"Bearer {sf.session_id}"})
    assert r.status_code == 400 and r.json()[0]["errorCode"] == "MALFORMED_QUERY"


def test_soql_compares_datetimes_written_without_quotes(org):
    o = org()
    old, mid, new, never = o.create("Contact", *[
        {"LastName": "Dt", "Email": f"d{i}@example.org", "Email_Verified_At__c": at}
        for i, at in enumerate(["2023-01-10T08:00:00.000+0000", "2024-06-01T12:30:00.000+0000",
                                "2025-03-01T00:00:00.000+0000", None])])
    sf = o.client()

    def ids(condition, tail=""):
        return [r["Id"] for r in sf.query_all(
            f"SELECT Id FROM Contact WHERE LastName = 'Dt' AND {condition}{tail}")["records"]]

    assert ids("Email_Verified_At__c < 2024-06-01T12:30:00Z") == [old]  # a null is never before or after
    assert ids("Email_Verified_At__c <= 2024-06-01T12:30:00Z", " ORDER BY Email_Verified_At__c") == [old, mid]
    assert ids("Email_Verified_At__c > 2024-06-01T14:30:00+02:00") == [new]  # the offset is from UTC
    assert ids("Email_Verified_At__c >= 2024-06-01T12:30:00.000Z") == [mid, new]
    assert ids("Email_Verified_At__c = 2024-06-01T12:30:00Z") == [mid]
    assert ids("Email_Verified_At__c != null AND Email_Verified_At__c < 2030-01-01T00:00:00Z",
               " ORDER BY Email_Verified_At__c DESC LIMIT 2") == [new, mid]
    assert ids("Email_Verified_At__c = null") == [never]
    assert sf.query("SELECT COUNT() FROM Contact WHERE LastName = 'Dt' AND Email_Verified_At__c < "
                    "2025-01-01T00:00:00Z")["totalSize"] == 2

    def refused(condition):
        r = o.http.get(f"{o.url}/services/data/v59.0/query/", headers={"Authorization": f"Bearer {sf.session_id}"},
                       params={"q": f"SELECT Id FROM Contact WHERE {condition}"})
        assert r.status_code == 400, r.text
        return r.json()[0]

    quoted = refused("Email_Verified_At__c < '2024-06-01T12:30:00Z'")
    assert quoted["errorCode"] == "INVALID_FIELD" and "should not be enclosed in quotes" in quoted["message"]
    assert refused("Email_Verified_At__c < 2024-06-01")["errorCode"] == "INVALID_FIELD"  # a date, not a dateTime
    assert refused("Email_Verified_At__c < 2024-06-01T12:30:00")["errorCode"] == "MALFORMED_QUERY"  # no zone
    assert refused("Email_Verified_At__c < 2024-13-01T12:30:00Z")["errorCode"] == "MALFORMED_QUERY"
    assert refused("Email_Verified_At__c < LAST_N_DAYS:3")["errorCode"] == "MALFORMED_QUERY"  # not simulated


def test_soql_orders_numbers_and_strings(org):
    o = org()
    small, big, none = o.create("Lead", *[
        {"LastName": name, "Company": "Cmp", "NumberOfEmployees": n}
        for name, n in (("Abel", 10), ("Baker", 5000), ("Cole", None))])
    sf = o.client()

    def ids(condition):
        return [r["Id"] for r in sf.query_all(
            f"SELECT Id FROM Lead WHERE Company = 'Cmp' AND {condition} ORDER BY LastName")["records"]]

    assert ids("NumberOfEmployees > 100") == [big]
    assert ids("NumberOfEmployees <= 10") == [small]
    assert ids("LastName < 'b'") == [small]  # case-insensitive, like Salesforce's default collation
    assert ids("LastName >= 'Baker'") == [big, none]


def test_collections_partial_failure_and_all_or_none(org):
    o = org()
    a, b, c = o.create("Contact", {"LastName": "A"}, {"LastName": "B"}, {"LastName": "C"})
    o.control("POST", "/record-faults", json={"id": a, "statusCode": "UNABLE_TO_LOCK_ROW", "times": 1})
    sf = o.client()

    def batch(all_or_none=False):
        return sf.restful("composite/sobjects", method="PATCH", json={
            "allOrNone": all_or_none,
            "records": [
                {"attributes": {"type": "Contact"}, "id": a, "Title": "T-a"},
                {"attributes": {"type": "Contact"}, "id": b, "Title": "T-b", "Bogus__c": "x"},
                {"attributes": {"type": "Contact"}, "id": c, "Title": "T-c"},
            ]})

    res = batch()
    assert res[0]["success"] is False and "id" not in res[0]
    assert res[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    assert res[1]["success"] is False and res[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert res[2] == {"id": c, "success": True, "errors": []}
    assert o.control("GET", f"/records/Contact/{c}")["writes"][0]["via"] == "collections"
    assert o.control("GET", f"/records/Contact/{a}")["record"]["Title"] is None

    o.control("POST", "/record-faults", json={"id": c, "statusCode": "UNABLE_TO_LOCK_ROW", "times": -1})
    res = batch(all_or_none=True)
    assert [r["errors"][0]["statusCode"] for r in res] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK", "INVALID_FIELD", "UNABLE_TO_LOCK_ROW"]
    # the lock fault on `a` was used up (times=1) and nothing was written by the rolled-back call
    assert o.control("GET", f"/records/Contact/{a}")["writes"] == []
    res = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Contact"}, "id": a, "Title": "T-a"}]})
    assert res == [{"id": a, "success": True, "errors": []}]


# ---------------------------------------------------------------- outbound messages


class ScriptedListener:
    """Plain-HTTP listener answering a script of bodies (last one repeats)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.posts: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append({"headers": dict(self.headers), "body": body})
                answer = outer.answers[min(len(outer.posts) - 1, len(outer.answers) - 1)]
                data = answer.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/salesforce/outbound"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def notification_ids(body: bytes) -> list[str]:
    root = ET.fromstring(body)
    return [n.findtext(f"{{{OM}}}Id") for n in root.iter(f"{{{OM}}}Notification")]


def test_outbound_three_contacts_one_post_over_https(org, certs):
    received = []
    listener_app = Flask("listener")

    @listener_app.post("/salesforce/outbound/<secret>")
    def listen(secret):
        received.append({"headers": dict(request.headers), "body": request.get_data(), "secret": secret})
        return ACK, 200, {"Content-Type": "text/xml"}

    listener = ServedApp(listener_app, certs).start()
    try:
        o = org(listener_url=f"{listener.url}/salesforce/outbound/s3cret")
        (acc,) = o.create("Account", {"Name": "Acme"})
        ids = o.create(
            "Contact",
            {"FirstName": "Dana", "LastName": "Rivers", "Email": "dana@example.org", "AccountId": acc,
             "CreatedDate": "2026-03-02T14:05:11Z"},
            {"LastName": "Okafor"},
            {"LastName": "Ng", "Title": "CTO", "Phone": "+1 415 555 0100"},
        )
        view = wait_for(lambda: (v := o.control("GET", "/outbound"))
                        and sum(1 for n in v["notifications"] if n["state"] == "acked") == 4 and v)
        contact_posts = [r for r in received if b'xsi:type="sf:Contact"' in r["body"]]
        assert len(contact_posts) == 1
        post = contact_posts[0]
        assert post["secret"] == "s3cret"
        assert post["headers"]["Content-Type"] == "text/xml; charset=utf-8"
        assert post["headers"]["Soapaction"] == '""'

        root = ET.fromstring(post["body"])
        assert root.tag == f"{{{SOAP}}}Envelope"
        notes = root.find(f"{{{SOAP}}}Body").find(f"{{{OM}}}notifications")
        assert notes.findtext(f"{{{OM}}}OrganizationId") == "00D5g000004XyZaEAK"
        assert notes.findtext(f"{{{OM}}}ActionId").startswith("04k")
        assert notes.find(f"{{{OM}}}SessionId").get(f"{{{XSI}}}nil") == "true"
        assert notes.findtext(f"{{{OM}}}EnterpriseUrl") == f"{o.url}/services/Soap/c/59.0/00D5g000004XyZa"
        assert notes.findtext(f"{{{OM}}}PartnerUrl") == f"{o.url}/services/Soap/u/59.0/00D5g000004XyZa"
        items = notes.findall(f"{{{OM}}}Notification")
        assert len(items) == 3
        nids = [n.findtext(f"{{{OM}}}Id") for n in items]
        assert all(len(n) == 18 and n.startswith("04l") for n in nids)
        sobjs = [n.find(f"{{{OM}}}sObject") for n in items]
        assert all(s.get(f"{{{XSI}}}type") == "sf:Contact" for s in sobjs)
        assert [s.findtext(f"{{{SF}}}Id") for s in sobjs] == ids
        first = sobjs[0]
        assert first.findtext(f"{{{SF}}}CreatedDate") == "2026-03-02T14:05:11.000Z"
        assert first.findtext(f"{{{SF}}}AccountId") == acc
        assert first.findtext(f"{{{SF}}}Email") == "dana@example.org"
        assert sobjs[1].find(f"{{{SF}}}Email") is None  # null fields are absent
        assert first.findtext(f"{{{SF}}}LastModifiedById", "").startswith("005")
        # The fields are those salesforce/'s Outbound Message sends: Title (the
        # field map's), not Phone.
        assert sobjs[2].findtext(f"{{{SF}}}Title") == "CTO" and sobjs[2].find(f"{{{SF}}}Phone") is None
        assert sobjs[1].find(f"{{{SF}}}Department") is None   # null: absent

        delivery = [d for d in view["deliveries"] if d["object"] == "Contact"]
        assert len(delivery) == 1 and delivery[0]["acked"] and delivery[0]["status_code"] == 200
        assert delivery[0]["message_ids"] == nids and delivery[0]["attempt"] == 1
    finally:
        listener.stop()


def test_outbound_retries_keep_notification_ids(org):
    listener = ScriptedListener(["OK", WRONG_ACK, ACK])
    try:
        o = org(listener_url=listener.url, om_retry_base_s=0.05, om_batch_window_s=0.05)
        (cid,) = o.create("Contact", {"LastName": "Rivers"})
        wait_for(lambda: len(listener.posts) >= 1)
        # the retry re-reads values at send time
        o.state.records["Contact"][cid]["Email"] = "late@example.org"
        view = wait_for(lambda: (v := o.control("GET", "/outbound"))
                        and v["notifications"][0]["state"] == "acked" and v)
        assert len(listener.posts) == 3
        ids = [notification_ids(p["body"]) for p in listener.posts]
        assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 1
        assert [d["acked"] for d in view["deliveries"]] == [False, False, True]
        assert [d["attempt"] for d in view["deliveries"]] == [1, 2, 3]
        assert "notificationsResponse" in view["deliveries"][1]["error"]
        assert b"late@example.org" in listener.posts[-1]["body"]
        assert view["notifications"][0]["attempts"] == 3
    finally:
        listener.close()


def test_outbound_duplicates_deadline_and_idle(org):
    listener = ScriptedListener([ACK])
    try:
        o = org(om_batch_window_s=0.01, om_retry_base_s=0.05)
        o.create("Lead", {"LastName": "Idle", "Company": "Acme"})
        time.sleep(0.1)  # listener_url unset: nothing is sent
        assert o.control("GET", "/outbound")["deliveries"] == []
        o.control("POST", "/config", json={"listener_url": listener.url, "om_duplicate_deliveries": True})
        view = wait_for(lambda: (v := o.control("GET", "/outbound")) and len(v["deliveries"]) == 2 and v)
        assert [d["duplicate"] for d in view["deliveries"]] == [False, True]
        assert view["deliveries"][0]["message_ids"] == view["deliveries"][1]["message_ids"]
        assert b'xsi:type="sf:Lead"' in listener.posts[0]["body"]

        # a dead endpoint past the deadline → failed
        o.control("POST", "/config", json={"listener_url": "http://127.0.0.1:9/none", "om_deadline_s": 0.3,
                                           "om_duplicate_deliveries": False, "om_timeout_s": 1})
        (cid,) = o.create("Contact", {"LastName": "Lost"})
        note = wait_for(lambda: next((n for n in o.control("GET", "/outbound")["notifications"]
                                      if n["record_id"] == cid and n["state"] == "failed"), None))
        assert note["attempts"] >= 1 and note["last_error"]
    finally:
        listener.close()


# ---------------------------------------------------------------- COUNT() and Bulk API 2.0 query jobs


def test_count_query_answers_only_the_size(org):
    o = org()
    o.create("Contact", *[{"LastName": "Counted"} for _ in range(3)], {"LastName": "Other"})
    sf = o.client()
    before = o.control("GET", "/usage")["api_used"]
    assert sf.query("SELECT COUNT() FROM Contact WHERE LastName = 'Counted'") == {
        "totalSize": 3, "done": True, "records": []}
    assert sf.query("select count() from Contact")["totalSize"] == 4
    assert o.control("GET", "/usage")["api_used"] == before + 2


def _bulk_get(o, sf, path, **params):
    return o.http.get(f"{o.url}/services/data/v59.0/jobs/query{path}", params=params,
                      headers={"Authorization": f"Bearer {sf.session_id}"}, timeout=5)


def test_bulk_query_job_runs_then_pages_its_csv_with_a_locator(org):
    o = org(bulk_query_delay_s=0.3)
    ids = o.create("Contact", *[{"LastName": "Bulk", "FirstName": f"F{i}"} for i in range(5)])
    other = o.create("Contact", {"LastName": "NotSelected"})
    o.control("POST", f"/records/Contact/{ids[4]}/delete")
    sf = o.client()
    used = o.control("GET", "/usage")["api_used"]

    job = sf.restful("jobs/query", method="POST",
                     json={"operation": "query", "query": "SELECT Id, FirstName FROM Contact WHERE LastName = 'Bulk'"})
    assert job["id"].startswith("750") and job["state"] == "UploadComplete"
    assert (job["operation"], job["object"], job["contentType"], job["apiVersion"]) == ("query", "Contact", "CSV", 59.0)
    early = _bulk_get(o, sf, f"/{job['id']}/results")
    assert early.status_code == 400 and early.json()[0]["errorCode"] == "INVALIDJOB"  # not complete yet

    done = wait_for(lambda: (lambda j: j if j["state"] == "JobComplete" else None)(
        sf.restful(f"jobs/query/{job['id']}")), timeout=5)
    assert done["jobType"] == "V2Query" and done["numberRecordsProcessed"] == 4 and "errorMessage" not in done

    pages, locator = [], None
    while locator != "null":
        params = {"maxRecords": 3, **({"locator": locator} if locator else {})}
        page = _bulk_get(o, sf, f"/{job['id']}/results", **params)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/csv")
        locator = page.headers["Sforce-Locator"]
        lines = page.text.splitlines()
        assert lines[0] == '"Id","FirstName"'
        assert int(page.headers["Sforce-NumberOfRecords"]) == len(lines) - 1
        pages.append([line.split(",")[0].strip('"') for line in lines[1:]])
    assert pages == [ids[:3], ids[3:4]]  # the deleted record is not selected, nor the other
    assert other[0] not in sum(pages, [])
    again = _bulk_get(o, sf, f"/{job['id']}/results", maxRecords=3)
    assert again.headers["Sforce-Locator"] == _bulk_get(o, sf, f"/{job['id']}/results", maxRecords=3).headers[
        "Sforce-Locator"]  # a locator is stable: a page can be read again

    # Every call counted against the allocation, with the usual header.
    assert o.control("GET", "/usage")["api_used"] > used + 4
    assert again.headers["Sforce-Limit-Info"].startswith("api-usage=")

    # queryAll includes the deleted record; the real client reads it all.
    every = sf.restful("jobs/query", method="POST",
                       json={"operation": "queryAll", "query": "SELECT Id FROM Contact WHERE LastName = 'Bulk'"})
    wait_for(lambda: sf.restful(f"jobs/query/{every['id']}")["state"] == "JobComplete", timeout=5)
    csv_pages = list(sf.bulk2.Contact.query("SELECT Id FROM Contact WHERE LastName = 'Bulk'", max_records=2,
                                            wait=0.05))
    assert len(csv_pages) == 2 and sum(len(p.splitlines()) - 1 for p in csv_pages) == 4
    all_rows = _bulk_get(o, sf, f"/{every['id']}/results").text.splitlines()[1:]
    assert sorted(r.strip('"') for r in all_rows) == sorted(ids)


def test_bulk_query_job_failures(org):
    o = org(bulk_query_delay_s=0.05)
    sf = o.client()
    bad = sf.restful("jobs/query", method="POST",
                     json={"operation": "query", "query": "SELECT Id FROM Contact WHERE No_Such__c = 'x'"})
    assert bad["state"] == "UploadComplete" and bad["object"] == "Contact"
    failed = wait_for(lambda: (lambda j: j if j["state"] == "Failed" else None)(
        sf.restful(f"jobs/query/{bad['id']}")), timeout=5)
    assert "INVALID_FIELD" in failed["errorMessage"]
    assert _bulk_get(o, sf, f"/{bad['id']}/results").status_code == 400

    count = sf.restful("jobs/query", method="POST", json={"operation": "query", "query": "SELECT COUNT() FROM Contact"})
    assert wait_for(lambda: sf.restful(f"jobs/query/{count['id']}")["state"] == "Failed", timeout=5)

    auth = {"Authorization": f"Bearer {sf.session_id}"}
    missing = o.http.post(f"{o.url}/services/data/v59.0/jobs/query", json={"operation": "query"}, headers=auth)
    assert missing.status_code == 400 and missing.json()[0]["errorCode"] == "INVALIDJOB"
    assert _bulk_get(o, sf, "/7505g00000AbCdEAAV").status_code == 404

    o.create("Contact", {"LastName": "V"})
    ok = sf.restful("jobs/query", method="POST", json={"operation": "query", "query": "SELECT Id FROM Contact"})
    wait_for(lambda: sf.restful(f"jobs/query/{ok['id']}")["state"] == "JobComplete", timeout=5)
    assert _bulk_get(o, sf, f"/{ok['id']}/results", locator="!!").status_code == 400
    other_version = o.http.get(f"{o.url}/services/data/v60.0/jobs/query/{ok['id']}/results", headers=auth)
    assert other_version.status_code == 409



def test_custom_fields_come_from_the_metadata_and_a_restricted_picklist_refuses_other_values(org):
    """Email_Verification_Status__c is a restricted picklist in salesforce/, as in a real org."""
    o = org()
    sf = o.client()
    fields = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    status = fields["Email_Verification_Status__c"]
    assert status["restrictedPicklist"] is True and status["custom"] is True
    assert [v["value"] for v in status["picklistValues"]] == ["valid", "invalid", "risky", "catch_all", "unknown"]
    technologies = {f["name"]: f for f in sf.Account.describe()["fields"]}["Technologies__c"]
    assert (technologies["type"], technologies["length"]) == ("textarea", 32768)

    (cid,) = o.create("Contact", {"LastName": "Okafor"})
    assert sf.Contact.update(cid, {"Email_Verification_Status__c": "catch_all"}) == 204
    bad = o.http.patch(f"{o.url}/services/data/v59.0/sobjects/Contact/{cid}",
                       headers={"Authorization": f"Bearer {o.token()['access_token']}"},
                       json={"Email_Verification_Status__c": "hand-set"})
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert o.control("GET", f"/records/Contact/{cid}")["record"]["Email_Verification_Status__c"] == "catch_all"
