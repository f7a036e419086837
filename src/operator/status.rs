//! `podcidr-operator status` (in progress).
