//! Version templates: the treefile's `version` with `{date}` and `{n}` filled in.
//!
//! `{date}` is the UTC day (`YYYYMMDD`) of `SOURCE_DATE_EPOCH`, or of now when it is not
//! set. `{n}` is a counter, like rpm-ostree's `automatic-version-prefix`: the text around
//! it is expanded first; when the parent commit's version is that text with a number in
//! place of `{n}`, the number goes up by one, otherwise it starts at 0. So
//! `"3.19.{date}.{n}"` gives `3.19.20261123.0`, `3.19.20261123.1`, … and starts again at
//! 0 on the next day. A version without `{n}` is used as expanded.

/// A parsed version template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Text before `{n}` (or all of it), `{date}` not yet expanded.
    before: String,
    /// Text after `{n}`; `None` without a counter.
    after: Option<String>,
}

impl Template {
    /// Checks the placeholders: only `{date}` and at most one `{n}`.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut rest = text;
        while let Some(i) = rest.find('{') {
            let close = rest[i..]
                .find('}')
                .ok_or_else(|| "an unclosed `{`".to_owned())?;
            let name = &rest[i + 1..i + close];
            if name != "date" && name != "n" {
                return Err(format!(
                    "unknown placeholder {{{name}}}; known: {{date}}, {{n}}"
                ));
            }
            rest = &rest[i + close + 1..];
        }
        if text.matches("{n}").count() > 1 {
            return Err("at most one {n}".to_owned());
        }
        Ok(match text.split_once("{n}") {
            Some((b, a)) => Template {
                before: b.to_owned(),
                after: Some(a.to_owned()),
            },
            None => Template {
                before: text.to_owned(),
                after: None,
            },
        })
    }

    /// Whether the version depends on when or on what came before.
    pub fn is_dynamic(&self) -> bool {
        self.after.is_some() || self.before.contains("{date}")
    }

    /// The version for a commit made at `epoch` on top of a parent with `parent`
    /// as its version.
    pub fn expand(&self, epoch: u64, parent: Option<&str>) -> String {
        let date = day_of(epoch);
        let before = self.before.replace("{date}", &date);
        let Some(after) = &self.after else {
            return before;
        };
        let after = after.replace("{date}", &date);
        let n = parent
            .and_then(|p| p.strip_prefix(before.as_str()))
            .and_then(|p| p.strip_suffix(after.as_str()))
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok())
            .map_or(0, |n| n + 1);
        format!("{before}{n}{after}")
    }
}

/// `SOURCE_DATE_EPOCH` when set, else now.
pub fn build_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
}

/// `YYYYMMDD` of a Unix time, UTC (the civil-from-days algorithm).
fn day_of(epoch: u64) -> String {
    let days = (epoch / 86400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_the_utc_day() {
        assert_eq!(day_of(0), "19700101");
        assert_eq!(day_of(951_782_400), "20000229");
        assert_eq!(day_of(1_700_000_000), "20231114");
        assert_eq!(day_of(1_704_067_199), "20231231");
    }

    #[test]
    fn counter_follows_the_parent_with_the_same_prefix() {
        let t = Template::parse("3.19.{date}.{n}").unwrap();
        assert!(t.is_dynamic());
        let e = 1_700_000_000;
        assert_eq!(t.expand(e, None), "3.19.20231114.0");
        assert_eq!(t.expand(e, Some("3.19.20231114.0")), "3.19.20231114.1");
        assert_eq!(t.expand(e, Some("3.19.20231114.41")), "3.19.20231114.42");
        // Another day or another prefix starts again.
        assert_eq!(t.expand(e, Some("3.19.20231113.7")), "3.19.20231114.0");
        assert_eq!(t.expand(e, Some("3.19.20231114.x")), "3.19.20231114.0");
        let s = Template::parse("v{n}-beta").unwrap();
        assert_eq!(s.expand(e, Some("v9-beta")), "v10-beta");
        assert_eq!(s.expand(e, Some("v9")), "v0-beta");
    }

    #[test]
    fn static_versions_stay_and_bad_placeholders_are_refused() {
        let t = Template::parse("3.19.0").unwrap();
        assert!(!t.is_dynamic());
        assert_eq!(t.expand(5, Some("3.19.0")), "3.19.0");
        assert!(Template::parse("{n}.{n}").unwrap_err().contains("one"));
        assert!(Template::parse("{time}").unwrap_err().contains("{time}"));
        assert!(Template::parse("1.{n").unwrap_err().contains("unclosed"));
    }
}
