//! `egressd hash-password`: an argon2id PHC string for `clients[].users`.

use std::io::Read;
use std::process::ExitCode;

pub fn run() -> ExitCode {
    super::print_or_fail(hash_password_from_stdin())
}

/// The password from stdin, a salt from the system's random generator.
fn hash_password_from_stdin() -> Result<String, String> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    let password = password
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&password);
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|e| format!("reading a random salt from /dev/urandom: {e}"))?;
    egressd::policy::credentials::hash_password(password, &salt).map(|phc| format!("{phc}\n"))
}
