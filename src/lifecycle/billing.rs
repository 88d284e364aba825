//! Billing effects of ending a contract or line at an end date (SPEC section 6).
