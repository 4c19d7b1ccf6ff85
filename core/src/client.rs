//! A sans-IO TURN client (RFC 8656 §6–§12 client side).
