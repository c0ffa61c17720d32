//! Stack tests, filled in by the module's author.
