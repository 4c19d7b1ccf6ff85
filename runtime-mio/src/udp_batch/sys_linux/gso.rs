//! UDP generic segmentation offload (udp(7), Linux ≥ 4.18): whether the kernel has it, and
//! the `UDP_SEGMENT` control message that asks for it.

use std::mem;

/// `UDP_SEGMENT` from linux/udp.h: the segment size of a GSO send (a u16).
const UDP_SEGMENT: libc::c_int = 103;
/// Room for one control message carrying a u16, 8-byte aligned.
pub(super) type CmsgBuf = [u64; 4];

/// True if this kernel knows UDP_SEGMENT (getsockopt on a fresh UDP socket succeeds).
pub fn gso_supported() -> bool {
    // SAFETY: plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return false;
    }
    let mut val: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    rc == 0
}

/// Attaches a UDP_SEGMENT control message of segment size `seg` to `h`.
pub(super) fn set_segment(h: &mut libc::msghdr, buf: &mut CmsgBuf, seg: u16) {
    h.msg_control = buf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
    h.msg_controllen = space.min(mem::size_of::<CmsgBuf>()) as _;
    // SAFETY: `h` points at `buf`, which is large and aligned enough for one cmsghdr
    // with a u16 of data (CMSG_SPACE(2) = 24 <= 32 bytes, 8-byte aligned).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(h);
        if c.is_null() {
            return;
        }
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
    }
}
