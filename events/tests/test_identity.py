import hashlib

from events.identity import IdentityGraph, email_hash, event_identifiers


def test_event_identifiers_primary_first_and_junk_ignored():
    keys = event_identifiers(
        type="track",
        anonymous_id="undefined",
        user_id="u-1",
        properties={"shopify_customer_id": 77, "email_hash": "ABC"},
    )

    assert keys == [("user_id", "u-1"), ("shopify_customer", "77"), ("email_hash", "abc")]


def test_identify_traits_email_is_hashed_and_alias_previous_id_links():
    identify = event_identifiers(
        type="identify",
        anonymous_id="a-1",
        user_id="u-1",
        properties={"traits": {"email": "  Ann@Example.COM "}},
    )
    alias = event_identifiers(
        type="alias", anonymous_id="", user_id="u-1", properties={"previous_id": "a-9"}
    )

    digest = hashlib.sha256(b"ann@example.com").hexdigest()
    assert identify == [("user_id", "u-1"), ("email_hash", digest), ("anonymous_id", "a-1")]
    assert alias == [("user_id", "u-1"), ("anonymous_id", "a-9")]
    assert email_hash("not an email") == ""


def test_without_properties_the_type_does_not_change_identifiers():
    # persons_resolve extracts them once per (anonymous_id, user_id) for such events.
    found = {
        kind: event_identifiers(type=kind, anonymous_id="a-1", user_id="u-1", properties=None)
        for kind in ["page_view", "identify", "alias", "purchase"]
    }

    assert set(map(tuple, found.values())) == {(("user_id", "u-1"), ("anonymous_id", "a-1"))}


def test_junk_ids_give_no_identifiers():
    for junk in ["", "null", "undefined", "0", "anonymous", "guest", "None"]:
        assert (
            event_identifiers(type="page_view", anonymous_id=junk, user_id=junk, properties={})
            == []
        )


def test_graph_never_joins_two_user_ids():
    graph = IdentityGraph(known={}, person_exclusive={})

    graph.link([("user_id", "u-1"), ("anonymous_id", "a-1")])
    graph.link([("user_id", "u-2"), ("anonymous_id", "a-1")])

    assert graph.find(("anonymous_id", "a-1")) == graph.find(("user_id", "u-1"))
    assert graph.find(("user_id", "u-2")) != graph.find(("user_id", "u-1"))


def test_graph_merges_existing_persons_through_a_shared_identifier():
    graph = IdentityGraph(
        known={("anonymous_id", "a-1"): 10, ("user_id", "u-1"): 11},
        person_exclusive={11: {"user_id": "u-1"}},
    )

    graph.link([("user_id", "u-1"), ("anonymous_id", "a-1")])

    [component] = [c for c in graph.components().values() if c.persons]
    assert component.persons == [10, 11]
    assert component.survivor == 10
    assert component.user_id == "u-1"
