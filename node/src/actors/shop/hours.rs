//! Opening hours of a shop: validation, "open now?" and "when does that change?".
//!
//! Pure: no clock reads, no I/O. The caller passes the instant (`now_ms`, ms since the Unix epoch)
//! and the wire type [`Hours`]. Local time is computed with `jiff` and its bundled time zone
//! database (never the system one), so every node agrees and daylight saving time is handled the
//! same way everywhere.
//!
//! A window `(opens_min, closes_min)` is the half-open local interval `[opens_min, closes_min)`
//! minutes after local midnight; `closes_min = 1440` means "until midnight". On a date that has an
//! exception, the exception's windows replace that weekday's (no windows: closed all day).
//!
//! Local times that a DST change skips never happen, and local times it repeats happen twice: a
//! shop opening at 02:30 on the night clocks jump from 02:00 to 03:00 opens at 03:00, and a
//! window in the repeated hour is open during both passes.

use std::collections::BTreeSet;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use piazza_protocol::ErrorCode;
use piazza_protocol::commerce::{HOURS_EXCEPTIONS_MAX, HOURS_WINDOWS_MAX, Hours};

/// Checks that `hours` can be evaluated: a known IANA time zone, weekdays 1..=7, windows with
/// `opens_min < closes_min <= 1440` that do not overlap on one day, exception dates that are real
/// `YYYY-MM-DD` dates, each date at most once.
///
/// Windows that touch (`9:00–12:00` and `12:00–14:00`) do not overlap.
pub(crate) fn validate(hours: &Hours) -> Result<(), ErrorCode> {
    if TimeZone::get(&hours.time_zone).is_err() {
        return Err(ErrorCode::invalid(
            "time_zone",
            format!("unknown time zone {:?}", hours.time_zone),
        ));
    }
    if hours.weekly.len() > HOURS_WINDOWS_MAX {
        return Err(ErrorCode::invalid(
            "weekly",
            format!("at most {HOURS_WINDOWS_MAX} windows"),
        ));
    }
    if hours.exceptions.len() > HOURS_EXCEPTIONS_MAX {
        return Err(ErrorCode::invalid(
            "exceptions",
            format!("at most {HOURS_EXCEPTIONS_MAX} exceptions"),
        ));
    }
    for window in &hours.weekly {
        if !(WEEKDAY_FIRST..=WEEKDAY_LAST).contains(&window.weekday) {
            return Err(ErrorCode::invalid(
                "weekly",
                format!("weekday {} is not 1 (Monday) to 7 (Sunday)", window.weekday),
            ));
        }
    }
    for weekday in WEEKDAY_FIRST..=WEEKDAY_LAST {
        let windows: Vec<(u16, u16)> = hours
            .weekly
            .iter()
            .filter(|window| window.weekday == weekday)
            .map(|window| (window.opens_min, window.closes_min))
            .collect();
        check_windows("weekly", windows)?;
    }
    let mut dates = BTreeSet::new();
    for exception in &hours.exceptions {
        let Some(date) = parse_date(&exception.date) else {
            return Err(ErrorCode::invalid(
                "exceptions",
                format!("{:?} is not a YYYY-MM-DD date", exception.date),
            ));
        };
        if !dates.insert(date) {
            return Err(ErrorCode::invalid(
                "exceptions",
                format!("{} appears twice", exception.date),
            ));
        }
        check_windows("exceptions", exception.windows.clone())?;
    }
    Ok(())
}

/// Whether the shop is open at `now_ms`. Hours that do not validate (unknown time zone) or an
/// instant outside the calendar's range count as closed; exceptions with a malformed date are
/// ignored.
pub(crate) fn is_open(hours: &Hours, now_ms: u64) -> bool {
    let Some(schedule) = Schedule::new(hours) else {
        return false;
    };
    let Some(now) = timestamp(now_ms) else {
        return false;
    };
    schedule.open_at(now)
}

/// The first instant after `now_ms` at which [`is_open`] changes, at most
/// [`NEXT_CHANGE_HORIZON_MS`] ahead; `None` if it does not change within that horizon (always
/// open, always closed, or closed by exceptions for longer) or the hours do not validate.
///
/// Meant for display ("closes at 19:00", "opens Monday 9:00"), not for scheduling exact work.
pub(crate) fn next_change_ms(hours: &Hours, now_ms: u64) -> Option<u64> {
    let schedule = Schedule::new(hours)?;
    let now = timestamp(now_ms)?;
    let horizon_ms = now_ms.checked_add(NEXT_CHANGE_HORIZON_MS)?;
    let open_now = schedule.open_at(now);

    // The state is constant between two consecutive candidates: the local time runs without
    // jumps (no transition) and crosses no window edge. So the first candidate at which the state
    // differs is the answer.
    let mut candidates_ms: Vec<u64> = Vec::new();
    let today = schedule.time_zone.to_datetime(now).date();
    // Start a day early: a transition back across midnight can make an instant after `now` fall
    // on the previous local date.
    let mut date = today.yesterday().ok()?;
    for _ in 0..NEXT_CHANGE_DATES_MAX {
        for (opens_min, closes_min) in schedule.windows_on(date) {
            for minute in [opens_min, closes_min] {
                let Some(local) = local_datetime(date, minute) else {
                    continue;
                };
                schedule.push_instants(local, &mut candidates_ms);
            }
        }
        let Ok(tomorrow) = date.tomorrow() else {
            break;
        };
        date = tomorrow;
    }
    // A transition moves local time without any window edge being crossed in local terms (the
    // skipped hour of spring), so each one is a candidate too.
    for transition in schedule.time_zone.following(now).take(TRANSITIONS_MAX) {
        let Ok(at_ms) = u64::try_from(transition.timestamp().as_millisecond()) else {
            continue;
        };
        if at_ms > horizon_ms {
            break;
        }
        candidates_ms.push(at_ms);
    }
    candidates_ms.retain(|&at_ms| at_ms > now_ms && at_ms <= horizon_ms);
    candidates_ms.sort_unstable();
    candidates_ms.dedup();
    candidates_ms
        .into_iter()
        .find(|&at_ms| timestamp(at_ms).is_some_and(|at| schedule.open_at(at) != open_now))
}

/// How far ahead [`next_change_ms`] looks: a week covers every weekly pattern, plus a day so that
/// "closed until the same weekday next week" is still found.
pub(crate) const NEXT_CHANGE_HORIZON_MS: u64 = 8 * DAY_MS;

/// Hours in a form that is cheap to evaluate many times (one time zone lookup, parsed dates).
struct Schedule<'h> {
    /// The shop's time zone.
    time_zone: TimeZone,
    /// The weekly windows.
    hours: &'h Hours,
    /// Exceptions with a well-formed date, with their windows.
    exceptions: Vec<(Date, &'h [(u16, u16)])>,
}

impl<'h> Schedule<'h> {
    /// `None` for an unknown time zone.
    fn new(hours: &'h Hours) -> Option<Schedule<'h>> {
        let time_zone = TimeZone::get(&hours.time_zone).ok()?;
        let exceptions = hours
            .exceptions
            .iter()
            .filter_map(|exception| {
                parse_date(&exception.date).map(|date| (date, exception.windows.as_slice()))
            })
            .collect();
        Some(Schedule {
            time_zone,
            hours,
            exceptions,
        })
    }

    /// The windows of a local date: its exception's if it has one, else its weekday's.
    fn windows_on(&self, date: Date) -> Vec<(u16, u16)> {
        if let Some((_, windows)) = self.exceptions.iter().find(|(day, _)| *day == date) {
            return windows.to_vec();
        }
        let weekday = date.weekday().to_monday_one_offset();
        self.hours
            .weekly
            .iter()
            .filter(|window| i8::try_from(window.weekday).is_ok_and(|day| day == weekday))
            .map(|window| (window.opens_min, window.closes_min))
            .collect()
    }

    /// Whether a window contains the local time of `at`.
    fn open_at(&self, at: Timestamp) -> bool {
        let local = self.time_zone.to_datetime(at);
        let time = local.time();
        let time_of_day_ms = i64::from(time.hour()) * HOUR_MS
            + i64::from(time.minute()) * MINUTE_MS
            + i64::from(time.second()) * 1000
            + i64::from(time.millisecond());
        self.windows_on(local.date())
            .into_iter()
            .any(|(opens_min, closes_min)| {
                i64::from(opens_min) * MINUTE_MS <= time_of_day_ms
                    && time_of_day_ms < i64::from(closes_min) * MINUTE_MS
            })
    }

    /// Pushes every instant whose local time is `local`: none in a gap, two in a fold.
    fn push_instants(&self, local: DateTime, instants_ms: &mut Vec<u64>) {
        let offsets = match self.time_zone.to_ambiguous_timestamp(local).offset() {
            AmbiguousOffset::Unambiguous { offset } => [Some(offset), None],
            AmbiguousOffset::Gap { .. } => [None, None],
            AmbiguousOffset::Fold { before, after } => [Some(before), Some(after)],
        };
        for offset in offsets.into_iter().flatten() {
            if let Ok(at) = offset.to_timestamp(local)
                && let Ok(at_ms) = u64::try_from(at.as_millisecond())
            {
                instants_ms.push(at_ms);
            }
        }
    }
}

/// A strict `YYYY-MM-DD` date (the format the wire documents; no other ISO 8601 spelling).
fn parse_date(text: &str) -> Option<Date> {
    let bytes = text.as_bytes();
    let well_formed = bytes.len() == 10
        && bytes.iter().enumerate().all(|(idx, &byte)| match idx {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    if !well_formed {
        return None;
    }
    let year: i16 = text.get(0..4)?.parse().ok()?;
    let month: i8 = text.get(5..7)?.parse().ok()?;
    let day: i8 = text.get(8..10)?.parse().ok()?;
    Date::new(year, month, day).ok()
}

/// Checks one day's windows: each `opens_min < closes_min <= 1440`, none overlapping.
fn check_windows(field: &str, mut windows: Vec<(u16, u16)>) -> Result<(), ErrorCode> {
    for &(opens_min, closes_min) in &windows {
        if opens_min >= closes_min || closes_min > DAY_MIN {
            return Err(ErrorCode::invalid(
                field,
                format!(
                    "window {opens_min}..{closes_min} must open before it closes, \
                     and close by minute {DAY_MIN}"
                ),
            ));
        }
    }
    windows.sort_unstable();
    for pair in windows.windows(2) {
        if let [earlier, later] = pair
            && later.0 < earlier.1
        {
            return Err(ErrorCode::invalid(
                field,
                format!(
                    "windows {}..{} and {}..{} overlap",
                    earlier.0, earlier.1, later.0, later.1
                ),
            ));
        }
    }
    Ok(())
}

/// The local date-time `minute` minutes after the start of `date` (1440 is the next midnight).
fn local_datetime(date: Date, minute: u16) -> Option<DateTime> {
    if minute >= DAY_MIN {
        return Some(date.tomorrow().ok()?.to_datetime(Time::midnight()));
    }
    let hour = i8::try_from(minute / 60).ok()?;
    let minute = i8::try_from(minute % 60).ok()?;
    Some(date.to_datetime(Time::new(hour, minute, 0, 0).ok()?))
}

/// `None` past the calendar's range (year 9999) or past `i64`.
fn timestamp(at_ms: u64) -> Option<Timestamp> {
    Timestamp::from_millisecond(i64::try_from(at_ms).ok()?).ok()
}

/// Monday, as the wire numbers weekdays.
const WEEKDAY_FIRST: u8 = 1;
/// Sunday.
const WEEKDAY_LAST: u8 = 7;
/// Minutes in a day: the latest a window may close.
const DAY_MIN: u16 = 1440;
/// Milliseconds in a minute.
const MINUTE_MS: i64 = 60_000;
/// Milliseconds in an hour.
const HOUR_MS: i64 = 60 * MINUTE_MS;
/// Milliseconds in a (24-hour) day.
const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// Local dates [`next_change_ms`] collects window edges on: yesterday, today and enough days to
/// pass the horizon even when DST makes a local day shorter than 24 hours.
const NEXT_CHANGE_DATES_MAX: usize = 11;
/// Most time zone transitions [`next_change_ms`] looks at. Real zones have at most a few per
/// year; the bound only keeps a pathological database entry from making the loop long.
const TRANSITIONS_MAX: usize = 16;

const _: () = assert!(NEXT_CHANGE_DATES_MAX as u64 * DAY_MS >= NEXT_CHANGE_HORIZON_MS + 2 * DAY_MS);

#[cfg(test)]
mod tests {
    use piazza_protocol::commerce::{HoursException, OpenWindow};

    use super::*;

    /// Ms since the epoch of a local date-time in `zone`, for readable tests.
    fn at(zone: &str, local: &str) -> u64 {
        let local: DateTime = local.parse().unwrap();
        let zoned = local.to_zoned(TimeZone::get(zone).unwrap()).unwrap();
        u64::try_from(zoned.timestamp().as_millisecond()).unwrap()
    }

    fn window(weekday: u8, opens: &str, closes: &str) -> OpenWindow {
        OpenWindow {
            weekday,
            opens_min: minutes(opens),
            closes_min: minutes(closes),
        }
    }

    fn minutes(hh_mm: &str) -> u16 {
        let (hh, mm) = hh_mm.split_once(':').unwrap();
        hh.parse::<u16>().unwrap() * 60 + mm.parse::<u16>().unwrap()
    }

    fn hours_in(zone: &str, weekly: Vec<OpenWindow>, exceptions: Vec<HoursException>) -> Hours {
        Hours {
            time_zone: zone.to_owned(),
            weekly,
            exceptions,
        }
    }

    /// Monday to Saturday 9:00–13:00 and 15:00–19:00 (a lunch break), closed on Sunday.
    fn shop(zone: &str) -> Hours {
        let weekly = (1..=6)
            .flat_map(|day| [window(day, "09:00", "13:00"), window(day, "15:00", "19:00")])
            .collect();
        hours_in(zone, weekly, Vec::new())
    }

    fn invalid_field(hours: &Hours) -> String {
        match validate(hours) {
            Err(ErrorCode::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn rome_weekday_windows_across_the_march_dst_change() {
        // Clocks in Rome go from 02:00 CET to 03:00 CEST on Sunday 2025-03-30. The shop's hours
        // are local, so 9:00 on Saturday is 08:00 UTC and 9:00 on Monday is 07:00 UTC.
        let hours = shop("Europe/Rome");
        validate(&hours).unwrap();
        assert!(is_open(&hours, at("Europe/Rome", "2025-03-29T09:00")));
        assert!(!is_open(
            &hours,
            at("Europe/Rome", "2025-03-29T08:59:59.999")
        ));
        assert!(
            !is_open(&hours, at("Europe/Rome", "2025-03-30T10:00")),
            "Sunday"
        );
        assert!(is_open(&hours, at("Europe/Rome", "2025-03-31T09:00")));
        assert!(!is_open(&hours, at("Europe/Rome", "2025-03-31T08:59")));
        assert_eq!(
            at("Europe/Rome", "2025-03-29T09:00"),
            at("UTC", "2025-03-29T08:00")
        );
        assert_eq!(
            at("Europe/Rome", "2025-03-31T09:00"),
            at("UTC", "2025-03-31T07:00")
        );
        assert!(is_open(&hours, at("UTC", "2025-03-31T07:00")));
        assert!(!is_open(&hours, at("UTC", "2025-03-29T07:30")));
    }

    #[test]
    fn window_in_the_skipped_hour_opens_when_the_clock_jumps() {
        // On 2025-03-30 Rome's local time jumps from 02:00 to 03:00; a window from 02:30 opens at
        // the jump (01:00 UTC) and is found as the next change.
        let hours = hours_in("Europe/Rome", vec![window(7, "02:30", "05:00")], Vec::new());
        let before = at("UTC", "2025-03-30T00:30");
        assert!(!is_open(&hours, before));
        assert_eq!(
            next_change_ms(&hours, before),
            Some(at("UTC", "2025-03-30T01:00"))
        );
        assert!(is_open(&hours, at("UTC", "2025-03-30T01:00")));
    }

    #[test]
    fn window_in_the_repeated_hour_is_open_twice() {
        // On 2025-10-26 Rome's local 02:00–03:00 happens twice (CEST, then CET). A window from
        // 02:15 to 02:45 opens in each pass.
        let hours = hours_in("Europe/Rome", vec![window(7, "02:15", "02:45")], Vec::new());
        let first_open = at("UTC", "2025-10-26T00:15");
        assert!(is_open(&hours, first_open));
        assert_eq!(
            next_change_ms(&hours, first_open),
            Some(at("UTC", "2025-10-26T00:45"))
        );
        let between = at("UTC", "2025-10-26T00:50");
        assert!(!is_open(&hours, between));
        assert_eq!(
            next_change_ms(&hours, between),
            Some(at("UTC", "2025-10-26T01:15"))
        );
    }

    #[test]
    fn tokyo() {
        // Tokyo is UTC+9 all year; 2025-06-02 is a Monday.
        let hours = hours_in("Asia/Tokyo", vec![window(1, "10:00", "20:00")], Vec::new());
        assert!(is_open(&hours, at("UTC", "2025-06-02T01:00")));
        assert!(!is_open(&hours, at("UTC", "2025-06-02T00:59")));
        assert!(is_open(&hours, at("UTC", "2025-06-02T10:59")));
        assert!(!is_open(&hours, at("UTC", "2025-06-02T11:00")));
        // Sunday 23:00 UTC is already Monday 08:00 in Tokyo: closed, opens two hours later.
        assert_eq!(
            next_change_ms(&hours, at("UTC", "2025-06-01T23:00")),
            Some(at("UTC", "2025-06-02T01:00"))
        );
    }

    #[test]
    fn utc_and_closing_at_midnight() {
        // Friday (5) 18:00–24:00 and Saturday (6) 00:00–02:00: one evening across midnight.
        let hours = hours_in(
            "UTC",
            vec![window(5, "18:00", "24:00"), window(6, "00:00", "02:00")],
            Vec::new(),
        );
        validate(&hours).unwrap();
        assert!(is_open(&hours, at("UTC", "2025-06-06T23:59:59")));
        assert!(is_open(&hours, at("UTC", "2025-06-07T00:00")));
        assert!(!is_open(&hours, at("UTC", "2025-06-07T02:00")));
        // Midnight is no change: the next one is at 02:00.
        assert_eq!(
            next_change_ms(&hours, at("UTC", "2025-06-06T20:00")),
            Some(at("UTC", "2025-06-07T02:00"))
        );
    }

    #[test]
    fn lunch_break() {
        let hours = shop("UTC");
        // 2025-06-03 is a Tuesday.
        assert!(is_open(&hours, at("UTC", "2025-06-03T12:59")));
        assert!(!is_open(&hours, at("UTC", "2025-06-03T13:00")));
        assert!(!is_open(&hours, at("UTC", "2025-06-03T14:59")));
        assert!(is_open(&hours, at("UTC", "2025-06-03T15:00")));
        assert!(!is_open(&hours, at("UTC", "2025-06-03T19:00")));
    }

    #[test]
    fn exception_closed_day() {
        // Christmas 2025 is a Thursday: closed all day, open again the next morning.
        let mut hours = shop("Europe/Rome");
        hours.exceptions.push(HoursException {
            date: "2025-12-25".into(),
            windows: Vec::new(),
        });
        validate(&hours).unwrap();
        assert!(is_open(&hours, at("Europe/Rome", "2025-12-24T10:00")));
        assert!(!is_open(&hours, at("Europe/Rome", "2025-12-25T10:00")));
        assert!(is_open(&hours, at("Europe/Rome", "2025-12-26T10:00")));
        assert_eq!(
            next_change_ms(&hours, at("Europe/Rome", "2025-12-24T20:00")),
            Some(at("Europe/Rome", "2025-12-26T09:00"))
        );
    }

    #[test]
    fn exception_special_window() {
        // Sunday 2025-12-21: open 10:00–18:00 for Christmas shopping, on a normally closed day;
        // Saturday 2025-12-20: open late, 9:00–22:00 in one go.
        let mut hours = shop("Europe/Rome");
        hours.exceptions.push(HoursException {
            date: "2025-12-21".into(),
            windows: vec![(600, 1080)],
        });
        hours.exceptions.push(HoursException {
            date: "2025-12-20".into(),
            windows: vec![(540, 1320)],
        });
        validate(&hours).unwrap();
        assert!(!is_open(&hours, at("Europe/Rome", "2025-12-21T09:59")));
        assert!(is_open(&hours, at("Europe/Rome", "2025-12-21T10:00")));
        assert!(!is_open(&hours, at("Europe/Rome", "2025-12-21T18:00")));
        assert!(
            is_open(&hours, at("Europe/Rome", "2025-12-20T14:00")),
            "no lunch break"
        );
        assert!(is_open(&hours, at("Europe/Rome", "2025-12-20T21:59")));
        // The following Sunday has no exception: closed.
        assert!(!is_open(&hours, at("Europe/Rome", "2025-12-28T12:00")));
    }

    #[test]
    fn invalid_inputs() {
        let bad_zone = hours_in("Europe/Atlantis", Vec::new(), Vec::new());
        assert_eq!(invalid_field(&bad_zone), "time_zone");
        assert_eq!(
            invalid_field(&hours_in("", Vec::new(), Vec::new())),
            "time_zone"
        );

        let overlapping = hours_in(
            "UTC",
            vec![window(1, "09:00", "13:00"), window(1, "12:00", "18:00")],
            Vec::new(),
        );
        assert_eq!(invalid_field(&overlapping), "weekly");
        // The same windows on different days, or touching, are fine.
        validate(&hours_in(
            "UTC",
            vec![window(1, "09:00", "13:00"), window(2, "12:00", "18:00")],
            Vec::new(),
        ))
        .unwrap();
        validate(&hours_in(
            "UTC",
            vec![window(1, "09:00", "13:00"), window(1, "13:00", "18:00")],
            Vec::new(),
        ))
        .unwrap();

        let backwards = hours_in("UTC", vec![window(1, "18:00", "09:00")], Vec::new());
        assert_eq!(invalid_field(&backwards), "weekly");
        let empty = hours_in("UTC", vec![window(1, "09:00", "09:00")], Vec::new());
        assert_eq!(invalid_field(&empty), "weekly");
        let past_midnight = hours_in(
            "UTC",
            vec![OpenWindow {
                weekday: 1,
                opens_min: 600,
                closes_min: 1441,
            }],
            Vec::new(),
        );
        assert_eq!(invalid_field(&past_midnight), "weekly");
        for weekday in [0, 8] {
            let bad_day = hours_in("UTC", vec![window(weekday, "09:00", "10:00")], Vec::new());
            assert_eq!(invalid_field(&bad_day), "weekly");
        }

        for date in [
            "2025-02-29",
            "2025-13-01",
            "2025-1-01",
            "25-01-01",
            "2025/01/01",
            "20250101",
            "2025-01-01T00:00",
            "",
        ] {
            let bad_date = hours_in(
                "UTC",
                Vec::new(),
                vec![HoursException {
                    date: date.into(),
                    windows: Vec::new(),
                }],
            );
            assert_eq!(invalid_field(&bad_date), "exceptions", "{date:?}");
        }
        let leap_day = hours_in(
            "UTC",
            Vec::new(),
            vec![HoursException {
                date: "2024-02-29".into(),
                windows: Vec::new(),
            }],
        );
        validate(&leap_day).unwrap();

        let twice = hours_in(
            "UTC",
            Vec::new(),
            vec![
                HoursException {
                    date: "2025-12-25".into(),
                    windows: Vec::new(),
                },
                HoursException {
                    date: "2025-12-25".into(),
                    windows: vec![(600, 700)],
                },
            ],
        );
        assert_eq!(invalid_field(&twice), "exceptions");
        for windows in [
            vec![(600, 700), (650, 800)],
            vec![(700, 600)],
            vec![(0, 1441)],
        ] {
            let bad_windows = hours_in(
                "UTC",
                Vec::new(),
                vec![HoursException {
                    date: "2025-12-24".into(),
                    windows,
                }],
            );
            assert_eq!(invalid_field(&bad_windows), "exceptions");
        }
    }

    #[test]
    fn limits() {
        // HOURS_WINDOWS_MAX windows validate; one more does not. Four non-overlapping windows per
        // weekday make 28.
        let weekly: Vec<OpenWindow> = (1..=7)
            .flat_map(|day| {
                (0..4).map(move |idx| {
                    window(
                        day,
                        &format!("{:02}:00", idx * 2),
                        &format!("{:02}:00", idx * 2 + 1),
                    )
                })
            })
            .collect();
        assert_eq!(weekly.len(), HOURS_WINDOWS_MAX);
        let mut full = hours_in("UTC", weekly, Vec::new());
        validate(&full).unwrap();
        full.weekly.push(window(1, "20:00", "21:00"));
        assert_eq!(invalid_field(&full), "weekly");

        let exceptions: Vec<HoursException> = (0..HOURS_EXCEPTIONS_MAX)
            .map(|idx| {
                let date = Date::new(2025, 1, 1)
                    .unwrap()
                    .checked_add(jiff::Span::new().days(i64::try_from(idx).unwrap()))
                    .unwrap();
                HoursException {
                    date: date.to_string(),
                    windows: Vec::new(),
                }
            })
            .collect();
        let mut full = hours_in("UTC", Vec::new(), exceptions);
        validate(&full).unwrap();
        full.exceptions.push(HoursException {
            date: "2026-12-31".into(),
            windows: Vec::new(),
        });
        assert_eq!(invalid_field(&full), "exceptions");
    }

    #[test]
    fn next_change() {
        let hours = shop("Europe/Rome");
        // Open Tuesday morning: closes for lunch at 13:00.
        assert_eq!(
            next_change_ms(&hours, at("Europe/Rome", "2025-06-03T10:00")),
            Some(at("Europe/Rome", "2025-06-03T13:00"))
        );
        // At the closing instant itself the shop is closed; the next change is 15:00.
        assert_eq!(
            next_change_ms(&hours, at("Europe/Rome", "2025-06-03T13:00")),
            Some(at("Europe/Rome", "2025-06-03T15:00"))
        );
        // Saturday evening: closed until Monday 9:00.
        assert_eq!(
            next_change_ms(&hours, at("Europe/Rome", "2025-06-07T19:30")),
            Some(at("Europe/Rome", "2025-06-09T09:00"))
        );
        // Saturday evening before the DST change: Monday 9:00 is CEST.
        assert_eq!(
            next_change_ms(&hours, at("Europe/Rome", "2025-03-29T19:30")),
            Some(at("UTC", "2025-03-31T07:00"))
        );
        // Always open, never open, bad zone: no change.
        let always = hours_in(
            "Asia/Tokyo",
            (1..=7).map(|day| window(day, "00:00", "24:00")).collect(),
            Vec::new(),
        );
        assert!(is_open(&always, at("UTC", "2025-03-30T01:00")));
        assert_eq!(next_change_ms(&always, at("UTC", "2025-03-30T01:00")), None);
        let never = hours_in("UTC", Vec::new(), Vec::new());
        assert_eq!(next_change_ms(&never, at("UTC", "2025-03-30T01:00")), None);
        let mut unknown = shop("UTC");
        unknown.time_zone = "Nowhere/Else".into();
        assert!(!is_open(&unknown, at("UTC", "2025-06-03T10:00")));
        assert_eq!(
            next_change_ms(&unknown, at("UTC", "2025-06-03T10:00")),
            None
        );
        // Open one day a week: the next opening is almost seven days away, within the horizon.
        let weekly = hours_in("UTC", vec![window(1, "09:00", "10:00")], Vec::new());
        assert_eq!(
            next_change_ms(&weekly, at("UTC", "2025-06-02T10:00")),
            Some(at("UTC", "2025-06-09T09:00"))
        );
        // Instants past the calendar are closed, with no change.
        assert!(!is_open(&always, u64::MAX));
        assert_eq!(next_change_ms(&always, u64::MAX), None);
    }
}
