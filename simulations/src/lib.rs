//! Deterministic simulation of many vomesh sites on a modelled WAN.
