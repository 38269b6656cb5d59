//! Alert channels (being written).
