//! The replication layer of vomesh: openraft over QUIC, generic over the
//! state machine it replicates. Nothing here knows about XMPP.
