//! The worker agent: a dispatcher session that reconciles assigned tasks with the engine. Not built yet: see issue 4.
