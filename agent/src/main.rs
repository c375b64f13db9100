//! `hako-agent`: prints its banner. Serving the agent API is the agent issue's work.
fn main() -> std::process::ExitCode {
    println!("{}", hako_agent::banner());
    if std::env::args().any(|a| a == "--version") {
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!("hako-agent: the agent API server is not implemented yet");
    std::process::ExitCode::FAILURE
}
