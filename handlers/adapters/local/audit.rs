//! TODO-owner-fills
