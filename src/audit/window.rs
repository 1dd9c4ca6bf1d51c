//! `--since` / `--until`: an RFC 3339 timestamp, or a duration meaning "that long before now".

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The time range decisions must fall in; both ends inclusive, either may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

impl Window {
    /// Parse the two options against `now` (the moment relative values count back from).
    pub fn parse(
        since: Option<&str>,
        until: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Window, String> {
        let w = Window {
            since: since.map(|s| parse_bound("--since", s, now)).transpose()?,
            until: until.map(|s| parse_bound("--until", s, now)).transpose()?,
        };
        if let (Some(s), Some(u)) = (w.since, w.until) {
            if s > u {
                return Err(format!(
                    "--since ({}) is later than --until ({}); nothing could match",
                    rfc3339(s),
                    rfc3339(u)
                ));
            }
        }
        Ok(w)
    }

    pub fn contains(&self, ts: OffsetDateTime) -> bool {
        self.since.is_none_or(|s| ts >= s) && self.until.is_none_or(|u| ts <= u)
    }

    pub fn is_open(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// `2026-11-29T09:00:00Z to the end`, for notes.
    pub fn describe(&self) -> String {
        format!(
            "{} to {}",
            self.since.map_or("the start".to_string(), rfc3339),
            self.until.map_or("the end".to_string(), rfc3339)
        )
    }
}

fn parse_bound(option: &str, value: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let value = value.trim();
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(value).map_err(|_| {
        format!(
            "{option} {value:?} is neither an RFC 3339 timestamp (2026-11-29T09:00:00Z) nor a duration \
             before now (90s, 30m, 1h, 2d)"
        )
    })?;
    time::Duration::try_from(ago)
        .ok()
        .and_then(|d| now.checked_sub(d))
        .ok_or_else(|| format!("{option} {value:?} reaches back before any representable time"))
}

/// A timestamp as the audit prints it: RFC 3339 in UTC.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).unwrap()
    }

    #[test]
    fn relative_values_count_back_from_now() {
        let now = at("2026-11-29T12:00:00Z");
        let w = Window::parse(Some("1h"), Some("30m"), now).unwrap();
        assert_eq!(w.since, Some(at("2026-11-29T11:00:00Z")));
        assert_eq!(w.until, Some(at("2026-11-29T11:30:00Z")));
        assert!(w.contains(at("2026-11-29T11:00:00Z")));
        assert!(w.contains(at("2026-11-29T11:30:00Z")));
        assert!(!w.contains(at("2026-11-29T10:59:59Z")));
        assert!(!w.contains(at("2026-11-29T11:30:01Z")));
    }

    #[test]
    fn absolute_values_keep_their_offset() {
        let now = at("2026-11-29T12:00:00Z");
        let w = Window::parse(Some("2026-11-29T10:00:00+02:00"), None, now).unwrap();
        assert_eq!(w.since, Some(at("2026-11-29T08:00:00Z")));
        assert!(w.until.is_none());
        assert!(w.contains(at("2030-01-01T00:00:00Z")));
        assert!(Window::default().is_open());
    }

    #[test]
    fn bad_values_are_explained() {
        let now = at("2026-11-29T12:00:00Z");
        let e = Window::parse(Some("yesterday"), None, now).unwrap_err();
        assert!(e.contains("--since \"yesterday\""), "{e}");
        let e = Window::parse(None, Some("2026-13-01"), now).unwrap_err();
        assert!(e.contains("--until"), "{e}");
        let e = Window::parse(Some("10m"), Some("1h"), now).unwrap_err();
        assert!(e.contains("later than --until"), "{e}");
    }
}
