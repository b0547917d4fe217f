//! The "time ago" text of every list (`image ls`, `ps`, `secret ls`, `service ps`, `node ls`):
//! go-units' `HumanDuration`, as Docker prints it.

use std::time::Duration;

/// go-units' `HumanDuration`: `Less than a second`, `5 seconds`, `About a minute`,
/// `3 hours`, `20 days`, `2 weeks`, `3 months`, `2 years`.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    // Hours round to the nearest, as go-units does; days, weeks and months derive from them.
    let hours = (duration.as_secs_f64() / 3600.0 + 0.5) as u64;
    if seconds < 1 {
        "Less than a second".to_owned()
    } else if seconds == 1 {
        "1 second".to_owned()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_owned()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_owned()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", seconds / 3600 / 24 / 365)
    }
}

/// `human_duration` followed by ` ago`, as lists print when something happened.
pub fn ago(duration: Duration) -> String {
    format!("{} ago", human_duration(duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_of_go_units() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            (5399, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (13 * 86_400, "13 days"),
            (14 * 86_400, "2 weeks"),
            (20 * 86_400, "2 weeks"),
            (59 * 86_400, "8 weeks"),
            (60 * 86_400, "2 months"),
            (729 * 86_400, "24 months"),
            (730 * 86_400, "2 years"),
        ];
        for (seconds, want) in cases {
            assert_eq!(
                human_duration(Duration::from_secs(seconds)),
                want,
                "{seconds}"
            );
        }
        assert_eq!(ago(Duration::from_secs(120)), "2 minutes ago");
    }
}
