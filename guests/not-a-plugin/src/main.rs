fn main() {
    println!("I am a wasi:cli command, not a weft plugin");
}
