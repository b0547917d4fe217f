//! Fuzzes the layer applier: any bytes, unpacked as an image layer, either fail or stay beneath
//! their directory.
#![no_main]

mod world;

use engine::unpack::{TarKind, unpack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let world = world::World::new();
    let _ = unpack(data, &world.inside, TarKind::Layer);
    world.check_outside();
});
