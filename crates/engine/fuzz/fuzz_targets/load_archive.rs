//! Fuzzes the image archive loader: any bytes, loaded as a docker-save or OCI archive, either
//! fail or become an image, and nothing beside the store changes.
#![no_main]

mod world;

use engine::store::ImageStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let world = world::World::new();
    let archive = world.inside.join("archive.tar");
    std::fs::write(&archive, data).expect("writing the input");
    let store = ImageStore::open(&world.inside.join("data")).expect("opening the store");
    let _ = store.load(&archive);
    world.check_outside();
});
