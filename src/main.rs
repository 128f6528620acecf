fn main() {
    println!("{}", dbtune_agent::version::long_version());
}
