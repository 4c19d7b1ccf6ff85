//! recvmmsg(2), sendmmsg(2), sendmsg(2) with UDP_SEGMENT (udp(7)).
//!
//! Receiving (`recv.rs`) and sending (`send.rs`) do not call each other; both use socket
//! addresses (`addr.rs`) and the empty headers below. The sends' UDP_SEGMENT control
//! message is in `gso.rs`.

mod addr;
mod gso;
mod recv;
mod send;

use std::mem;

pub use gso::gso_supported;
pub use recv::RecvSys;
pub use send::SendSys;

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data (integers and null pointers when zeroed).
    unsafe { mem::zeroed() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}
