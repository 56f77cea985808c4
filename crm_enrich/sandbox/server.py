"""Runs the simulators together, each on its own HTTPS port, trusted
through a locally generated CA."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from crm_enrich.sandbox.clearout import PREFIX as CLEAROUT_PREFIX
from crm_enrich.sandbox.clearout import ClearoutSimConfig, create_clearout_app
from crm_enrich.sandbox.clodura import CloduraSimConfig, create_clodura_app
from crm_enrich.sandbox.common import Certificates, ServedApp, ensure_certificates
from crm_enrich.sandbox.pubsub import EventBus, PubSubServer, PubSubSimConfig, control_blueprint
from crm_enrich.sandbox.salesforce import SalesforceSimConfig, create_salesforce_app

SANDBOX_CLODURA_KEY = "sandbox-clodura-key"
SANDBOX_CLEAROUT_TOKEN = "sandbox-clearout-token"


@dataclass
class Sandbox:
    certs: Certificates
    clodura: ServedApp
    salesforce: ServedApp
    clearout: ServedApp
    pubsub: PubSubServer
    clodura_config: CloduraSimConfig
    salesforce_config: SalesforceSimConfig
    clearout_config: ClearoutSimConfig

    @property
    def info(self) -> dict:
        return {
            "ca_bundle": str(self.certs.ca_pem),
            "clodura_url": self.clodura.url,
            "clodura_api_key": SANDBOX_CLODURA_KEY,
            "salesforce_url": self.salesforce.url,
            "salesforce_org_id": self.salesforce_config.org_id,
            "salesforce_client_id": self.salesforce_config.client_id,
            "salesforce_client_secret": self.salesforce_config.client_secret,
            # The org's Pub/Sub API (gRPC, host:port), over the same CA.
            "pubsub_url": self.pubsub.url,
            # The API base the client uses (the simulator routes under /v2).
            "clearout_url": f"{self.clearout.url}{CLEAROUT_PREFIX}",
            "clearout_api_token": self.clearout_config.api_tokens[0],
        }

    def stop(self) -> None:
        self.clodura.stop()
        self.salesforce.stop()
        self.clearout.stop()
        self.pubsub.stop()


def start_sandbox(state_dir: Path, listener_url: str | None = None,
                  clodura_config: CloduraSimConfig | None = None,
                  salesforce_config: SalesforceSimConfig | None = None,
                  clearout_config: ClearoutSimConfig | None = None,
                  pubsub_config: PubSubSimConfig | None = None,
                  clodura_port: int = 0, salesforce_port: int = 0, clearout_port: int = 0, pubsub_port: int = 0,
                  host: str = "127.0.0.1") -> Sandbox:
    """`host`: the address the simulators serve on (their certificate names
    it too), e.g. a bridge that network namespaces reach them through."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    certs = ensure_certificates(state_dir, extra_host=host)
    clodura_config = clodura_config or CloduraSimConfig(api_keys={SANDBOX_CLODURA_KEY: "Max"})
    salesforce_config = salesforce_config or SalesforceSimConfig()
    clearout_config = clearout_config or ClearoutSimConfig(api_tokens=[SANDBOX_CLEAROUT_TOKEN])
    if listener_url:
        salesforce_config.listener_url = listener_url
    salesforce_app = create_salesforce_app(salesforce_config)
    # The org's change events, served over gRPC and steered through the
    # Salesforce simulator's control API.
    bus = EventBus(salesforce_app.extensions["salesforce_sim"], pubsub_config)
    salesforce_app.register_blueprint(control_blueprint(bus))
    salesforce = ServedApp(salesforce_app, certs, host, port=salesforce_port).start()
    sandbox = Sandbox(
        certs=certs,
        clodura=ServedApp(create_clodura_app(clodura_config), certs, host, port=clodura_port).start(),
        salesforce=salesforce,
        pubsub=PubSubServer(bus, salesforce.url, certs, host, port=pubsub_port).start(),
        clearout=ServedApp(create_clearout_app(clearout_config), certs, host, port=clearout_port).start(),
        clodura_config=clodura_config,
        salesforce_config=salesforce_config,
        clearout_config=clearout_config,
    )
    (state_dir / "sandbox.json").write_text(json.dumps(sandbox.info, indent=2))
    return sandbox
