//! The `/etc/resolv.conf` a task on an overlay network gets, pointing at the embedded DNS, and
//! whether it sets `ndots` itself; pure. Docker's rules (moby's `container-dns.md`, section 1):
//!
//! - the one nameserver is 127.0.0.11;
//! - the search list is the task's (`--dns-search`) when it has one, else the host's; a `.`
//!   given by the task is dropped, and a task whose only search domain is `.` gets no search
//!   line at all;
//! - the options in effect are the task's (`--dns-option`) when it has any, else the host's,
//!   as given; a valid `ndots` (a whole number) among them is kept, and when there is none
//!   (none given, or only invalid ones, which are dropped) `ndots:0` is added.

use super::netns::EMBEDDED_DNS_ADDRESS;

/// What a task's resolv.conf holds, and what the embedded DNS needs to know of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskResolvConf {
    /// The file's text.
    pub text: String,
    /// Whether the task's own options set `ndots` to 1 or more, for
    /// [`AskingTask::ndots_set`](super::AskingTask::ndots_set).
    pub ndots_set: bool,
}

/// The resolv.conf of a task with these `--dns-search` domains and `--dns-option` options, on a
/// host whose own resolv.conf is `host_resolv_conf`.
pub fn task_resolv_conf(
    task_search: &[String],
    task_options: &[String],
    host_resolv_conf: &[u8],
) -> TaskResolvConf {
    let search: Vec<String> = if task_search.is_empty() {
        let (host, _unparsed_lines) = resolv_conf::Config::parse_with_errors(host_resolv_conf);
        host.get_last_search_or_domain().cloned().collect()
    } else {
        task_search
            .iter()
            .filter(|domain| domain.as_str() != ".")
            .cloned()
            .collect()
    };
    let in_effect: Vec<String> = if task_options.is_empty() {
        host_options(host_resolv_conf)
    } else {
        task_options.to_vec()
    };
    let mut options: Vec<String> = in_effect
        .into_iter()
        .filter(|option| ndots_value(option).is_none_or(|value| value.is_some()))
        .collect();
    if !options
        .iter()
        .any(|option| ndots_value(option).is_some_and(|value| value.is_some()))
    {
        options.push("ndots:0".to_owned());
    }
    let ndots_set = task_options
        .iter()
        .any(|option| ndots_value(option).is_some_and(|value| value.is_some_and(|n| n > 0)));

    let mut text = format!("nameserver {}\n", EMBEDDED_DNS_ADDRESS.ip());
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    text.push_str(&format!("options {}\n", options.join(" ")));
    TaskResolvConf { text, ndots_set }
}

/// `None` for an option that is not `ndots`; `Some(None)` for an `ndots` whose value is not a
/// whole number; `Some(Some(n))` for a valid one.
fn ndots_value(option: &str) -> Option<Option<u32>> {
    option
        .strip_prefix("ndots:")
        .map(|value| value.parse().ok())
}

/// The host's options as written: the resolv-conf crate keeps only the ones it knows, typed,
/// and the task must get them as given.
fn host_options(host_resolv_conf: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(host_resolv_conf)
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("options"))
        .filter(|rest| rest.starts_with([' ', '\t']))
        .flat_map(|rest| {
            rest.split(['#', ';'])
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    const HOST: &[u8] = b"# the host's\nnameserver 192.0.2.1\nsearch corp.example lab.example\n\
        options ndots:2 timeout:1 # two options\n";

    #[test]
    fn a_task_without_settings_gets_the_host_s_search_and_options() {
        assert_eq!(
            task_resolv_conf(&[], &[], HOST),
            TaskResolvConf {
                text: "nameserver 127.0.0.11\nsearch corp.example lab.example\n\
                       options ndots:2 timeout:1\n"
                    .to_owned(),
                ndots_set: false,
            }
        );
    }

    #[test]
    fn a_host_without_ndots_gives_ndots_0_and_no_search_line_without_search_domains() {
        assert_eq!(
            task_resolv_conf(&[], &[], b"nameserver 192.0.2.1\n").text,
            "nameserver 127.0.0.11\noptions ndots:0\n"
        );
    }

    #[test]
    fn the_task_s_options_replace_the_host_s_and_get_ndots_0_when_they_have_none() {
        let resolv = task_resolv_conf(&[], &strings(&["timeout:3", "ndots:many"]), HOST);
        assert_eq!(
            resolv.text,
            "nameserver 127.0.0.11\nsearch corp.example lab.example\n\
             options timeout:3 ndots:0\n"
        );
        assert!(!resolv.ndots_set);
    }

    #[test]
    fn the_task_s_own_ndots_is_kept_and_set_when_above_zero() {
        let resolv = task_resolv_conf(&[], &strings(&["ndots:3", "edns0"]), HOST);
        assert_eq!(
            resolv.text,
            "nameserver 127.0.0.11\nsearch corp.example lab.example\noptions ndots:3 edns0\n"
        );
        assert!(resolv.ndots_set);
        assert!(!task_resolv_conf(&[], &strings(&["ndots:0"]), HOST).ndots_set);
    }

    #[test]
    fn the_task_s_search_domains_replace_the_host_s_without_dot() {
        assert_eq!(
            task_resolv_conf(&strings(&["svc.example", "."]), &[], HOST).text,
            "nameserver 127.0.0.11\nsearch svc.example\noptions ndots:2 timeout:1\n"
        );
        assert_eq!(
            task_resolv_conf(&strings(&["."]), &[], HOST).text,
            "nameserver 127.0.0.11\noptions ndots:2 timeout:1\n"
        );
    }
}
