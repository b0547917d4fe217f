//! The manager role: control API, orchestrators, allocator, dispatcher, CA and join tokens, stacks. Not built yet: see issues 4-6.
