//! `ambient token …` and `ambient node revoke`: the operator's commands, against the admin API
//! with an admin key.

use std::time::Duration;

use ambient_protocol::join::TokenInfo;

/// Reads a duration as people write it: `90s`, `30m`, `12h`, `7d`, `2w` (a bare number is
/// seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, like 7d or 12h"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use s, m, h, d or w)"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(scale)))
}

/// The token table `ambient token list` prints.
pub fn token_table(tokens: &[TokenInfo]) -> String {
    let mut out = format!(
        "{:<16}  {:>9}  {:<8}  {:<20}  note\n",
        "token", "used", "state", "expires"
    );
    let now = chrono::Utc::now();
    for t in tokens {
        let state = if t.revoked {
            "revoked"
        } else if t.expires_at <= now {
            "expired"
        } else if t.used >= t.uses {
            "used up"
        } else {
            "valid"
        };
        out.push_str(&format!(
            "{:<16}  {:>4}/{:<4}  {:<8}  {:<20}  {}\n",
            t.id,
            t.used,
            t.uses,
            state,
            t.expires_at.format("%Y-%m-%d %H:%M UTC"),
            t.note.as_deref().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(parse_duration("7 days").is_err());
        assert!(parse_duration("d").is_err());
    }
}
