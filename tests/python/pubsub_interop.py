"""Drive a vomesh node's pubsub service with slixmpp's XEP-0060 plugin, as an
ordinary third-party client would: a VOEvent node created with a
configuration form, configuration read and changed, a subscriber, both
sample VOEvents published and received unchanged, retrieval, affiliations,
retract, purge and delete with their notifications, and the VOEvent rules
(invalid payloads refused, identical republication idempotent).

Prints one `ok <check>` line per check and exits non-zero at the first
failure (printing `FAIL <check>: <why>`).

usage: pubsub_interop.py HOST PORT VOEVENT_DIR node
  (accounts alice/wonderland, bob/builder and carol/singer exist on the node)
"""
import asyncio
import logging
import os
import ssl
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError

DOMAIN = "localhost"
SERVICE = "pubsub." + DOMAIN
VOEVENT_NS = "http://www.ivoa.net/xml/VOEvent/v2.0"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
PUBSUB_NS = "http://jabber.org/protocol/pubsub"
EVENT_NS = PUBSUB_NS + "#event"
OWNER_NS = PUBSUB_NS + "#owner"
ERRORS_NS = PUBSUB_NS + "#errors"
STANZA_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NOTIFICATION_TIMEOUT = 10


class CheckFailed(Exception):
    pass


def check(name, condition, why=""):
    if not condition:
        raise CheckFailed(f"{name}: {why}")
    print(f"ok {name}", flush=True)


def same_tree(a, b):
    """Canonical equality: names (with namespaces), attributes, text and
    children, in order; prefixes and attribute order do not matter."""
    if a.tag != b.tag or a.attrib != b.attrib:
        return False
    if (a.text or "") != (b.text or "") or len(a) != len(b):
        return False
    return all(
        same_tree(x, y) and (x.tail or "") == (y.tail or "") for x, y in zip(a, b)
    )


def error_of(error):
    """(condition, pubsub-specific condition) of an IqError."""
    element = error.iq.xml.find("{jabber:client}error")
    condition = app = None
    for child in list(element) if element is not None else []:
        namespace, _, name = child.tag[1:].partition("}")
        if namespace == STANZA_NS and name != "text":
            condition = name
        elif namespace == ERRORS_NS:
            app = name
    return condition, app


async def expect_error(name, request, condition, app=None):
    try:
        await request
    except IqError as error:
        got = error_of(error)
        check(name, got == (condition, app), f"expected {(condition, app)}, got {got}")
        return
    check(name, False, "the request succeeded")


def items_of(iq, namespace=PUBSUB_NS):
    """[(id, payload element)] of an items result or notification."""
    parent = iq.xml.find(f"{{{namespace}}}{'pubsub' if namespace == PUBSUB_NS else 'event'}")
    items = parent.find(f"{{{namespace}}}items") if parent is not None else None
    if items is None:
        return []
    return [
        (item.get("id"), item[0] if len(item) else None)
        for item in items.findall(f"{{{namespace}}}item")
    ]


def published_ids(iq):
    """Item ids in a publish result (XEP-0060 §7.1.2)."""
    return [
        item.get("id")
        for item in iq.xml.iterfind(f"{{{PUBSUB_NS}}}pubsub/{{{PUBSUB_NS}}}publish/{{{PUBSUB_NS}}}item")
    ]


def form_values(iq):
    form = iq.xml.find(f"{{{OWNER_NS}}}pubsub/{{{OWNER_NS}}}configure/{{jabber:x:data}}x")
    values = {}
    for field in form.findall("{jabber:x:data}field"):
        values[field.get("var")] = [v.text or "" for v in field.findall("{jabber:x:data}value")]
    return values


class Client(slixmpp.ClientXMPP):
    """A session that queues every pubsub event it receives."""

    def __init__(self, localpart, password):
        super().__init__(f"{localpart}@{DOMAIN}/interop", password)
        for plugin in ("xep_0030", "xep_0004", "xep_0060", "xep_0203"):
            self.register_plugin(plugin)
        # slixmpp writes a namespaced attribute (xsi:schemaLocation) only when
        # its namespace has a prefix here; without it the VOEvent would be
        # sent without that attribute.
        self.namespace_map[XSI_NS] = "xsi"
        # The test node uses a self-signed certificate.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.events = asyncio.Queue()
        self.started = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("failed_auth", self._failed)
        for kind in ("publish", "retract", "purge", "delete", "config", "subscription"):
            self.add_event_handler(f"pubsub_{kind}", self._queue(kind))

    def _started(self, _event):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _failed(self, _event):
        if not self.started.done():
            self.started.set_exception(CheckFailed(f"{self.boundjid.bare} could not log in"))

    def _queue(self, kind):
        def handler(message):
            self.events.put_nowait((kind, message))

        return handler

    @property
    def pubsub(self):
        return self.plugin["xep_0060"]

    async def next_event(self, name):
        try:
            return await asyncio.wait_for(self.events.get(), NOTIFICATION_TIMEOUT)
        except asyncio.TimeoutError:
            raise CheckFailed(f"{name}: no notification within {NOTIFICATION_TIMEOUT}s")

    async def no_event(self, name, wait=0.5):
        await asyncio.sleep(wait)
        check(name, self.events.empty(), "an unexpected notification arrived")


async def login(localpart, password, host, port):
    client = Client(localpart, password)
    client.connect(host=host, port=port)
    await asyncio.wait_for(client.started, 30)
    return client


def read_voevent(path):
    with open(path, "rb") as f:
        data = f.read()
    return ET.fromstring(data)


async def run(host, port, voevent_dir, node):
    alice = await login("alice", "wonderland", host, port)
    bob = await login("bob", "builder", host, port)
    carol = await login("carol", "singer", host, port)
    gaia = read_voevent(os.path.join(voevent_dir, "Gaia16aac.xml"))
    swift = read_voevent(os.path.join(voevent_dir, "SWIFT_bat_position_v2.0_example.xml"))
    gaia_id, swift_id = gaia.get("ivorn"), swift.get("ivorn")

    # Create with a configuration form (XEP-0060 §8.1.3).
    form = alice.plugin["xep_0004"].make_form("submit")
    form.add_field(var="pubsub#type", value=VOEVENT_NS)
    form.add_field(var="pubsub#max_items", value="2")
    form.add_field(var="pubsub#notify_retract", value="1")
    form.add_field(var="pubsub#access_model", value="open")
    await alice.pubsub.create_node(SERVICE, node, config=form)
    check("create node with configuration", True)

    config = form_values(await alice.pubsub.get_node_config(SERVICE, node))
    check(
        "get configuration",
        config.get("pubsub#type") == [VOEVENT_NS]
        and config.get("pubsub#max_items") == ["2"]
        and config.get("pubsub#notify_retract") in (["1"], ["true"]),
        str(config),
    )
    form = alice.plugin["xep_0004"].make_form("submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=PUBSUB_NS + "#node_config")
    form.add_field(var="pubsub#max_items", value="10")
    await alice.pubsub.set_node_config(SERVICE, node, form)
    config = form_values(await alice.pubsub.get_node_config(SERVICE, node))
    check(
        "set configuration",
        config.get("pubsub#max_items") == ["10"] and config.get("pubsub#type") == [VOEVENT_NS],
        str(config),
    )

    result = await bob.pubsub.subscribe(SERVICE, node)
    state = result["pubsub"]["subscription"]["subscription"]
    check("subscribe", state == "subscribed", state)

    # Publish both samples; the item id of a VOEvent is its IVORN.
    result = await alice.pubsub.publish(SERVICE, node, id=gaia_id, payload=gaia)
    published = published_ids(result)
    check("publish with the IVORN as id", published == [gaia_id], str(published))
    kind, message = await bob.next_event("notification")
    received = items_of(message, EVENT_NS)
    check(
        "notification carries the published VOEvent",
        kind == "publish"
        and [i for i, _ in received] == [gaia_id]
        and same_tree(received[0][1], gaia),
        ET.tostring(message.xml, encoding="unicode")[:2000],
    )
    check(
        "notification has delay and stanza-id",
        message.xml.find("{urn:xmpp:delay}delay") is not None
        and message.xml.find("{urn:xmpp:sid:0}stanza-id") is not None,
        ET.tostring(message.xml, encoding="unicode")[:500],
    )

    result = await alice.pubsub.publish(SERVICE, node, id=gaia_id, payload=gaia)
    republished = published_ids(result)
    check("identical republication answers the same id", republished == [gaia_id], str(republished))

    result = await alice.pubsub.publish(SERVICE, node, payload=swift)
    published = published_ids(result)
    check("publish without id gets the IVORN", published == [swift_id], str(published))
    kind, message = await bob.next_event("second notification")
    received = items_of(message, EVENT_NS)
    # The republication sent nothing, so the next notification is SWIFT's.
    check(
        "identical republication is not notified",
        kind == "publish" and [i for i, _ in received] == [swift_id],
        f"{kind} {[i for i, _ in received]}",
    )
    check("second VOEvent received unchanged", same_tree(received[0][1], swift))

    not_an_ivorn = ET.fromstring(
        f'<VOEvent xmlns="{VOEVENT_NS}" ivorn="not-an-ivorn" role="test" version="2.0"/>'
    )
    await expect_error(
        "invalid VOEvent is bad-request + invalid-payload",
        alice.pubsub.publish(SERVICE, node, payload=not_an_ivorn),
        "bad-request",
        "invalid-payload",
    )
    await expect_error(
        "non-VOEvent payload is bad-request + invalid-payload",
        alice.pubsub.publish(SERVICE, node, payload=ET.fromstring('<alert xmlns="urn:example"/>')),
        "bad-request",
        "invalid-payload",
    )

    # Retrieval (§6.5): all, by id, max_items.
    everything = items_of(await bob.pubsub.get_items(SERVICE, node))
    check(
        "retrieve all items",
        sorted(i for i, _ in everything) == sorted([gaia_id, swift_id])
        and all(same_tree(p, gaia if i == gaia_id else swift) for i, p in everything),
        str([i for i, _ in everything]),
    )
    one = items_of(await bob.pubsub.get_item(SERVICE, node, gaia_id))
    check(
        "retrieve an item by id",
        [i for i, _ in one] == [gaia_id] and same_tree(one[0][1], gaia),
        str([i for i, _ in one]),
    )
    latest = items_of(await bob.pubsub.get_items(SERVICE, node, max_items=1))
    check("retrieve the latest item with max_items", [i for i, _ in latest] == [swift_id], str(latest))

    # Affiliations (§8.9): carol becomes a publisher and publishes.
    await alice.pubsub.modify_affiliations(SERVICE, node, [(f"carol@{DOMAIN}", "publisher")])
    affiliations = await alice.pubsub.get_node_affiliations(SERVICE, node)
    listed = {
        a.get("jid"): a.get("affiliation")
        for a in affiliations.xml.iter(f"{{{OWNER_NS}}}affiliation")
    }
    check(
        "owner grants publisher",
        listed.get(f"carol@{DOMAIN}") == "publisher" and listed.get(f"alice@{DOMAIN}") == "owner",
        str(listed),
    )
    carols = ET.fromstring(ET.tostring(gaia))
    carols.set("ivorn", "ivo://gaia.cam.uk/alerts#Gaia16aad")
    await carol.pubsub.publish(SERVICE, node, payload=carols)
    kind, message = await bob.next_event("publisher's notification")
    received = items_of(message, EVENT_NS)
    check(
        "publisher can publish",
        kind == "publish" and [i for i, _ in received] == ["ivo://gaia.cam.uk/alerts#Gaia16aad"],
        str(received),
    )

    # Retract with notification (§7.2).
    await alice.pubsub.retract(SERVICE, node, gaia_id, notify=True)
    kind, message = await bob.next_event("retract notification")
    retracted = [
        r.get("id") for r in message.xml.iter(f"{{{EVENT_NS}}}retract")
    ]
    check("retract notifies the subscriber", kind == "retract" and retracted == [gaia_id], f"{kind} {retracted}")
    remaining = items_of(await bob.pubsub.get_items(SERVICE, node))
    check("retracted item is gone", gaia_id not in [i for i, _ in remaining], str(remaining))

    # An outcast cannot subscribe (§6.1.3.8).
    await alice.pubsub.modify_affiliations(SERVICE, node, [(f"carol@{DOMAIN}", "outcast")])
    await expect_error(
        "outcast cannot subscribe", carol.pubsub.subscribe(SERVICE, node), "forbidden"
    )

    # Purge (§8.5).
    await alice.pubsub.purge(SERVICE, node)
    kind, message = await bob.next_event("purge notification")
    check("purge notifies the subscriber", kind == "purge", kind)
    remaining = items_of(await bob.pubsub.get_items(SERVICE, node))
    check("purge removes every item", remaining == [], str(remaining))

    # Delete (§8.4).
    await alice.pubsub.delete_node(SERVICE, node)
    kind, message = await bob.next_event("delete notification")
    check("delete notifies the subscriber", kind == "delete", kind)
    await expect_error(
        "deleted node is gone", bob.pubsub.get_items(SERVICE, node), "item-not-found"
    )
    await bob.no_event("no further notification")

    for client in (alice, bob, carol):
        client.disconnect()


def main():
    host, port, voevent_dir, node = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    logging.basicConfig(level=logging.ERROR)
    try:
        asyncio.run(asyncio.wait_for(run(host, port, voevent_dir, node), 120))
    except CheckFailed as failure:
        print(f"FAIL {failure}", flush=True)
        sys.exit(1)
    except IqError as error:
        print(f"FAIL unexpected error reply: {error.iq}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
