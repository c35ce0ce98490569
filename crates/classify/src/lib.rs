//! meridian-classify
