"""Log in to a vomesh node with slixmpp (SCRAM over STARTTLS), bind, enable
XEP-0198 stream management, ping the server with every stanza acknowledged,
and exit 0 only if every step succeeded.

usage: login_ping.py JID PASSWORD HOST PORT
"""
import asyncio
import logging
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout


class LoginPing(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ok = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        # An ack request after every stanza: each must come back acknowledged.
        self.register_plugin("xep_0198", {"window": 1})
        self.acked = 0
        self.add_event_handler("stanza_acked", self.on_acked)
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("failed_auth", self.failed)

    async def start(self, _event):
        try:
            rtt = await self.plugin["xep_0199"].ping(jid=self.boundjid.domain, timeout=10)
            info = await self.plugin["xep_0030"].get_info(jid=self.boundjid.domain, timeout=10)
            features = info["disco_info"]["features"]
            print(f"bound {self.boundjid.full}; ping rtt {rtt:.4f}s; features {sorted(features)}")
            mechanism = self.plugin["feature_mechanisms"].mech.name
            print(f"authenticated with {mechanism}")
            sm = self.plugin["xep_0198"]
            # slixmpp asks before it sends: one more request covers the last.
            sm.request_ack()
            deadline = self.loop.time() + 10
            while sm.unacked_queue and self.loop.time() < deadline:
                await asyncio.sleep(0.05)
            print(f"stream management enabled {sm.enabled_in}, {self.acked} stanzas acked, "
                  f"{len(sm.unacked_queue)} unacked, server handled {sm.last_ack}")
            self.ok = ("urn:xmpp:ping" in features and mechanism.startswith("SCRAM-SHA-")
                       and sm.enabled_in and self.acked >= 2 and not sm.unacked_queue)
        except (IqError, IqTimeout) as error:
            print(f"IQ failed: {error}")
        self.disconnect()

    def on_acked(self, _stanza):
        self.acked += 1

    def failed(self, _event):
        print("authentication failed")
        self.disconnect()


def main():
    jid, password, host, port = sys.argv[1:5]
    logging.basicConfig(level=logging.WARNING)
    client = LoginPing(jid, password)
    # The test node uses a self-signed certificate.
    client.ssl_context.check_hostname = False
    client.ssl_context.verify_mode = __import__("ssl").CERT_NONE
    client.plugin["feature_mechanisms"].unencrypted_plain = False
    client.connect(host=host, port=int(port))
    client.loop.run_until_complete(asyncio.wait_for(client.disconnected, 30))
    sys.exit(0 if client.ok else 1)


if __name__ == "__main__":
    main()
