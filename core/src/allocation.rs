//! Allocations, permissions and channels (RFC 8656 §2.2, §9, §12).
