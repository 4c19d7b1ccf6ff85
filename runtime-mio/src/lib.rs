//! The turnpike runtime on mio.
