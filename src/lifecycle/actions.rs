//! Operator actions (SPEC section 6): cancel, end early, revoke.
