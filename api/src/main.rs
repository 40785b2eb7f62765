fn main() -> anyhow::Result<()> {
    anyhow::bail!("cmdb: no commands yet")
}
