"""`crm-enrich sandbox` runs the simulators alone, over HTTPS with its CA."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import requests

from crm_enrich.dev.devstack import free_port, wait_for
from crm_enrich.salesforce.pubsub import pubsub_api_pb2 as pb
from crm_enrich.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc


def test_sandbox_command_serves_clodura_salesforce_clearout_and_pubsub(tmp_path):
    ports = [free_port(), free_port(), free_port(), free_port()]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "crm-enrich"), "sandbox", "--state-dir", str(tmp_path),
         "--clodura-port", str(ports[0]), "--salesforce-port", str(ports[1]),
         "--clearout-port", str(ports[2]), "--pubsub-port", str(ports[3])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        info = wait_for(lambda: json.loads((tmp_path / "sandbox.json").read_text()), 30, "sandbox.json")
        assert info["clodura_url"] == f"https://127.0.0.1:{ports[0]}"
        ca = info["ca_bundle"]
        credits = wait_for(lambda: requests.get(f"{info['clodura_url']}/api/v1/credits", verify=ca, timeout=2,
                                                headers={"X-API-KEY": info["clodura_api_key"]}), 10, "Clodura")
        assert credits.status_code == 200 and "remainingCredits" in credits.json()
        token = requests.post(f"{info['salesforce_url']}/services/oauth2/token", verify=ca, timeout=5,
                              data={"grant_type": "client_credentials"},
                              auth=(info["salesforce_client_id"], info["salesforce_client_secret"]))
        assert token.status_code == 200 and token.json()["instance_url"].startswith("https://127.0.0.1")
        assert info["clearout_url"] == f"https://127.0.0.1:{ports[2]}/v2"
        clearout = requests.get(f"{info['clearout_url']}/email_verify/getcredits", verify=ca, timeout=5,
                                headers={"Authorization": f"Bearer {info['clearout_api_token']}"})
        assert clearout.status_code == 200 and clearout.json()["data"]["available_credits"] > 0
        assert info["pubsub_url"] == f"127.0.0.1:{ports[3]}"
        with grpc.secure_channel(info["pubsub_url"], grpc.ssl_channel_credentials(Path(ca).read_bytes())) as channel:
            topic = pb_grpc.PubSubStub(channel).GetTopic(
                pb.TopicRequest(topic_name="/data/ContactChangeEvent"), timeout=10,
                metadata=(("accesstoken", token.json()["access_token"]),
                          ("instanceurl", token.json()["instance_url"]), ("tenantid", info["salesforce_org_id"])))
        assert topic.can_subscribe and topic.schema_id
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
