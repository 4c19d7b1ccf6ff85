//! TURN REST API credentials: username `<expiry-unix-seconds>:<user>`, password
//! base64(HMAC-SHA1(secret, username)) (draft-uberti-behave-turn-rest-00 §2.2).

/// The password the REST scheme derives from `secret` for `username`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let _ = (secret, username);
    todo!()
}

/// The expiry (unix seconds) that starts a REST username, or None if it has none.
pub fn rest_expiry(username: &str) -> Option<u64> {
    let _ = username;
    todo!()
}
