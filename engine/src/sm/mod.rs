//! The replicated state machine: commands carried in log entries and their
//! application to sled, atomically with the applied index.
