"""`crm-enrich sandbox` runs the simulators alone, over HTTPS with its CA."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from crm_enrich.dev.devstack import free_port, wait_for


def test_sandbox_command_serves_clodura_salesforce_and_clearout(tmp_path):
    ports = [free_port(), free_port(), free_port()]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "crm-enrich"), "sandbox", "--state-dir", str(tmp_path),
         "--clodura-port", str(ports[0]), "--salesforce-port", str(ports[1]),
         "--clearout-port", str(ports[2])],
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
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
