"""Access control and discovery of a vomesh node's pubsub service, driven by
slixmpp: service and node discovery (XEP-0030), a node with the authorize
access model (a pending subscription approved by the owner through the
XEP-0060 §8.6 form), publish-options preconditions, the whitelist model
with a member, subscription options and unsubscribing.

Prints one `ok <check>` line per check and exits non-zero at the first
failure (printing `FAIL <check>: <why>`).

usage: pubsub_access.py HOST PORT NODE
  (accounts alice/wonderland, bob/builder and carol/singer exist on the node)
"""
import asyncio
import logging
import sys
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from pubsub_interop import (
    DOMAIN,
    EVENT_NS,
    OWNER_NS,
    PUBSUB_NS,
    SERVICE,
    CheckFailed,
    check,
    expect_error,
    form_values,
    items_of,
    login,
)

DATA_NS = "jabber:x:data"
AUTHORIZATION_FORM = PUBSUB_NS + "#subscribe_authorization"


def fields_of(form):
    return {
        field.get("var"): [v.text or "" for v in field.findall(f"{{{DATA_NS}}}value")]
        for field in form.findall(f"{{{DATA_NS}}}field")
    }


async def run(host, port, node):
    alice = await login("alice", "wonderland", host, port)
    bob = await login("bob", "builder", host, port)
    carol = await login("carol", "singer", host, port)
    authorization_requests = asyncio.Queue()

    def on_message(message):
        form = message.xml.find(f"{{{DATA_NS}}}x")
        if form is not None and fields_of(form).get("FORM_TYPE") == [AUTHORIZATION_FORM]:
            authorization_requests.put_nowait(form)

    # slixmpp raises "message" only for messages with a body; forms come as
    # "message_xform" (xep_0004).
    alice.add_event_handler("message_xform", on_message)

    info = await alice.plugin["xep_0030"].get_info(jid=SERVICE)
    identities = info["disco_info"]["identities"]
    features = info["disco_info"]["features"]
    check(
        "service is a pubsub service",
        any(i[0] == "pubsub" and i[1] == "service" for i in identities)
        and PUBSUB_NS + "#publish" in features
        and PUBSUB_NS + "#subscribe" in features,
        f"{identities} {features}",
    )

    form = alice.plugin["xep_0004"].make_form("submit")
    form.add_field(var="pubsub#access_model", value="authorize")
    await alice.pubsub.create_node(SERVICE, node, config=form)
    info = await alice.plugin["xep_0030"].get_info(jid=SERVICE, node=node)
    identities = info["disco_info"]["identities"]
    check(
        "node is a leaf",
        any(i[0] == "pubsub" and i[1] == "leaf" for i in identities),
        str(identities),
    )

    # authorize (§6.1.3.2, §8.6): pending until the owner approves.
    result = await carol.pubsub.subscribe(SERVICE, node)
    state = result["pubsub"]["subscription"]["subscription"]
    check("subscription to an authorize node is pending", state == "pending", state)
    try:
        request = await asyncio.wait_for(authorization_requests.get(), 10)
    except asyncio.TimeoutError:
        raise CheckFailed("owner gets an authorization request: none within 10s")
    values = fields_of(request)
    check(
        "owner gets an authorization request",
        values.get("pubsub#node") == [node]
        and values.get("pubsub#subscriber_jid") == [f"carol@{DOMAIN}"],
        str(values),
    )
    answer = alice.Message(sto=SERVICE)
    approval = ET.SubElement(answer.xml, f"{{{DATA_NS}}}x", {"type": "submit"})
    for var, value in values.items():
        field = ET.SubElement(approval, f"{{{DATA_NS}}}field", {"var": var})
        ET.SubElement(field, f"{{{DATA_NS}}}value").text = (
            "true" if var == "pubsub#allow" else (value[0] if value else "")
        )
    answer.send()
    kind, message = await carol.next_event("subscription approval")
    states = [s.get("subscription") for s in message.xml.iter(f"{{{EVENT_NS}}}subscription")]
    check(
        "approved subscriber is told it is subscribed",
        kind == "subscription" and states == ["subscribed"],
        f"{kind} {states}",
    )
    await alice.pubsub.publish(SERVICE, node, id="first", payload=ET.fromstring('<alert xmlns="urn:example">1</alert>'))
    kind, message = await carol.next_event("notification after approval")
    check(
        "approved subscriber is notified",
        kind == "publish" and [i for i, _ in items_of(message, EVENT_NS)] == ["first"],
        kind,
    )

    # publish-options are preconditions (§7.1.5).
    options = alice.plugin["xep_0004"].make_form("submit")
    options.add_field(var="FORM_TYPE", ftype="hidden", value=PUBSUB_NS + "#publish-options")
    options.add_field(var="pubsub#access_model", value="open")
    await expect_error(
        "unmet publish-options precondition",
        alice.pubsub.publish(
            SERVICE, node, id="second", payload=ET.fromstring('<alert xmlns="urn:example">2</alert>'), options=options
        ),
        "conflict",
        "precondition-not-met",
    )
    options = alice.plugin["xep_0004"].make_form("submit")
    options.add_field(var="FORM_TYPE", ftype="hidden", value=PUBSUB_NS + "#publish-options")
    options.add_field(var="pubsub#access_model", value="authorize")
    await alice.pubsub.publish(
        SERVICE, node, id="second", payload=ET.fromstring('<alert xmlns="urn:example">2</alert>'), options=options
    )
    check("met publish-options precondition publishes", True)
    await carol.next_event("second notification")

    await expect_error(
        "non-subscriber cannot list an authorize node's items",
        bob.plugin["xep_0030"].get_items(jid=SERVICE, node=node),
        "not-authorized",
        "not-subscribed",
    )
    items = await carol.plugin["xep_0030"].get_items(jid=SERVICE, node=node)
    names = sorted(item[2] for item in items["disco_items"]["items"])
    check("disco#items lists the node's items", names == ["first", "second"], str(names))

    # whitelist (§4.5): only members may subscribe.
    config = alice.plugin["xep_0004"].make_form("submit")
    config.add_field(var="FORM_TYPE", ftype="hidden", value=PUBSUB_NS + "#node_config")
    config.add_field(var="pubsub#access_model", value="whitelist")
    await alice.pubsub.set_node_config(SERVICE, node, config)
    values = form_values(await alice.pubsub.get_node_config(SERVICE, node))
    check("access model changed to whitelist", values.get("pubsub#access_model") == ["whitelist"], str(values))
    await expect_error(
        "non-member cannot subscribe to a whitelist node",
        bob.pubsub.subscribe(SERVICE, node),
        "not-allowed",
        "closed-node",
    )
    await alice.pubsub.modify_affiliations(SERVICE, node, [(f"bob@{DOMAIN}", "member")])
    result = await bob.pubsub.subscribe(SERVICE, node)
    state = result["pubsub"]["subscription"]["subscription"]
    check("member subscribes to a whitelist node", state == "subscribed", state)

    result = await bob.pubsub.get_subscription_options(SERVICE, node, f"bob@{DOMAIN}")
    form = result.xml.find(f"{{{PUBSUB_NS}}}pubsub/{{{PUBSUB_NS}}}options/{{{DATA_NS}}}x")
    check(
        "subscription options form",
        form is not None
        and fields_of(form).get("FORM_TYPE") == [PUBSUB_NS + "#subscribe_options"],
        ET.tostring(result.xml, encoding="unicode")[:800],
    )

    await bob.pubsub.unsubscribe(SERVICE, node)
    result = await alice.pubsub.get_node_subscriptions(SERVICE, node)
    subscribers = sorted(
        s.get("jid") for s in result.xml.iter(f"{{{OWNER_NS}}}subscription")
    )
    check("unsubscribe removes the subscription", subscribers == [f"carol@{DOMAIN}"], str(subscribers))

    for client in (alice, bob, carol):
        client.disconnect()


def main():
    host, port, node = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    logging.basicConfig(level=logging.ERROR)
    try:
        asyncio.run(asyncio.wait_for(run(host, port, node), 120))
    except CheckFailed as failure:
        print(f"FAIL {failure}", flush=True)
        sys.exit(1)
    except IqError as error:
        print(f"FAIL unexpected error reply: {error.iq}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
