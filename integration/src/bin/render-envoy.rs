//! Prints `envoy/envoy.yaml` as rendered from `envoy/envoy.template.yaml` with the demo ports.
fn main() {
    print!("{}", integration::harness::render_demo_envoy());
}
