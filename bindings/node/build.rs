// Sets the linker flags a node addon needs (undefined napi_* symbols resolved by node at load).
fn main() {
    napi_build::setup();
}
