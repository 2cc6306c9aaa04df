//! ZStack simulator (being written).
