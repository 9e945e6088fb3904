//! The commerce arguments that are more than one value: opening hours, variants, product-list
//! sections, time windows, amounts. Pure, so the tests can check them without a node; every
//! error is a sentence naming what was given and what was expected.

use anyhow::{Context, Result, anyhow, bail, ensure};
use piazza_client::commerce::{
    HOURS_WINDOWS_MAX, HoursException, OpenWindow, ProductId, Scope, StaffRole, VariantId,
    VariantSpec,
};
use piazza_client::{Currency, Money, money};

/// Minutes in a day: the latest closing time (`24:00`).
const DAY_MINUTES: u16 = 24 * 60;

/// One millisecond-resolution day.
pub(crate) const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Weekday names as `--open` takes them (also the full English names), Monday = 1.
const WEEKDAYS: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

/// `amount` of `currency`, exactly (see [`money::parse_money`]).
pub(crate) fn amount(text: &str, currency: Currency) -> Result<Money> {
    Ok(money::parse_money(text, currency)?)
}

/// `--open "mon-fri 09:00-18:00"`: days (names, ranges such as `mon-fri` or `fri-mon`, separated
/// by commas) and windows (`HH:MM-HH:MM`, separated by commas; `24:00` closes at midnight).
pub(crate) fn open_spec(text: &str) -> Result<Vec<OpenWindow>> {
    let (days, windows) = text.trim().split_once(char::is_whitespace).ok_or_else(|| {
        anyhow!("{text:?} is not DAYS HH:MM-HH:MM (e.g. \"mon-fri 09:00-18:00\")")
    })?;
    let days = weekdays(days)?;
    let windows = time_windows(windows.trim())?;
    let mut out = Vec::with_capacity(days.len() * windows.len());
    for weekday in days {
        for &(opens_min, closes_min) in &windows {
            out.push(OpenWindow {
                weekday,
                opens_min,
                closes_min,
            });
        }
    }
    Ok(out)
}

/// Every `--open` together, sorted by day and time; at most [`HOURS_WINDOWS_MAX`] windows.
pub(crate) fn weekly(specs: &[String]) -> Result<Vec<OpenWindow>> {
    let mut weekly = Vec::new();
    for spec in specs {
        weekly.extend(open_spec(spec)?);
        ensure!(
            weekly.len() <= HOURS_WINDOWS_MAX,
            "at most {HOURS_WINDOWS_MAX} opening windows a week"
        );
    }
    weekly.sort_by_key(|w| (w.weekday, w.opens_min));
    Ok(weekly)
}

/// `mon`, `mon-fri`, `sat,sun`, `fri-mon` (wrapping past Sunday) → weekday numbers, Monday = 1,
/// each at most once, in the order given.
fn weekdays(text: &str) -> Result<Vec<u8>> {
    let mut days = Vec::new();
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (weekday(first)?, weekday(last)?),
            None => {
                let day = weekday(part)?;
                (day, day)
            }
        };
        // Bounded: at most seven steps from `first` to `last` around the week.
        let mut day = first;
        loop {
            if !days.contains(&day) {
                days.push(day);
            }
            if day == last {
                break;
            }
            day = day % 7 + 1;
        }
    }
    Ok(days)
}

fn weekday(name: &str) -> Result<u8> {
    let lower = name.trim().to_ascii_lowercase();
    let index = WEEKDAYS
        .iter()
        .position(|(short, long)| lower == *short || lower == *long)
        .ok_or_else(|| anyhow!("{name:?} is not a weekday (mon, tue, wed, thu, fri, sat, sun)"))?;
    // At most 6, so it fits.
    Ok(index as u8 + 1)
}

/// `09:00-13:00,15:00-19:00` → minute pairs, each opening before it closes.
pub(crate) fn time_windows(text: &str) -> Result<Vec<(u16, u16)>> {
    text.split(',')
        .map(|window| {
            let (opens, closes) = window
                .trim()
                .split_once('-')
                .ok_or_else(|| anyhow!("{window:?} is not HH:MM-HH:MM"))?;
            let (opens, closes) = (minute_of_day(opens)?, minute_of_day(closes)?);
            ensure!(opens < closes, "{window:?} closes before it opens");
            Ok((opens, closes))
        })
        .collect()
}

/// `HH:MM` → minutes since midnight, `00:00` to `24:00`.
fn minute_of_day(text: &str) -> Result<u16> {
    let bad = || anyhow!("{text:?} is not a time HH:MM from 00:00 to 24:00");
    let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
    let two_digits = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(hours) || !two_digits(minutes) {
        return Err(bad());
    }
    let (hours, minutes): (u16, u16) = (
        hours.parse().map_err(|_| bad())?,
        minutes.parse().map_err(|_| bad())?,
    );
    let total = hours * 60 + minutes;
    if hours > 24 || minutes > 59 || total > DAY_MINUTES {
        return Err(bad());
    }
    Ok(total)
}

/// `--closed 2026-12-25`: closed all day.
pub(crate) fn closed_day(text: &str) -> Result<HoursException> {
    Ok(HoursException {
        date: date(text)?,
        windows: Vec::new(),
    })
}

/// `--special "2026-12-24 09:00-13:00"`: open only in these windows that day.
pub(crate) fn special_day(text: &str) -> Result<HoursException> {
    let (day, windows) = text
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| anyhow!("{text:?} is not YYYY-MM-DD HH:MM-HH:MM"))?;
    Ok(HoursException {
        date: date(day)?,
        windows: time_windows(windows.trim())?,
    })
}

/// `YYYY-MM-DD` with a plausible month and day (the node checks the calendar and time zone).
fn date(text: &str) -> Result<String> {
    let bad = || anyhow!("{text:?} is not a date YYYY-MM-DD");
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return Err(bad());
    };
    let digits =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(year, 4) || !digits(month, 2) || !digits(day, 2) {
        return Err(bad());
    }
    let (month, day): (u8, u8) = (month.parse()?, day.parse()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    Ok(text.to_owned())
}

/// `--variant "red-l:Red / L:13.00"`: id, title and optionally a price in the product's
/// currency (`"red-l:Red / L"` keeps the product's price). A title containing `:` needs the
/// price part, possibly empty: `"x:Size: 42:"`.
pub(crate) fn variant(text: &str, currency: Currency) -> Result<VariantSpec> {
    let parts: Vec<&str> = text.split(':').collect();
    let (id, title, price) = match parts.as_slice() {
        [id, title] => (*id, (*title).to_owned(), None),
        [id, middle @ .., price] if !middle.is_empty() => {
            let price = if price.is_empty() {
                None
            } else {
                Some(amount(price, currency).with_context(|| format!("price of variant {id}"))?)
            };
            (*id, middle.join(":"), price)
        }
        _ => bail!("{text:?} is not ID:TITLE or ID:TITLE:PRICE"),
    };
    ensure!(!title.trim().is_empty(), "variant {id:?} needs a title");
    Ok(VariantSpec {
        id: id.parse::<VariantId>()?,
        title,
        options: Vec::new(),
        price,
    })
}

/// `--section "Breakfast=croissant,cappuccino"`: a titled list of product ids. The title may
/// contain `=`; product ids never do, so the last `=` separates them.
pub(crate) fn section(text: &str) -> Result<(String, Vec<ProductId>)> {
    let (title, products) = text
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("{text:?} is not TITLE=PRODUCT,PRODUCT,…"))?;
    ensure!(!title.trim().is_empty(), "section {text:?} needs a title");
    let products = products
        .split(',')
        .map(|id| id.trim().parse::<ProductId>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("products of section {title:?}"))?;
    Ok((title.to_owned(), products))
}

/// A staff role to give, or `None` to take the role away (`--role none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RoleChoice(pub(crate) Option<StaffRole>);

/// `owner`, `manager`, `agent`, or `none` (no longer staff).
pub(crate) fn staff_role(text: &str) -> Result<RoleChoice, String> {
    match text {
        "owner" => Ok(RoleChoice(Some(StaffRole::Owner))),
        "manager" => Ok(RoleChoice(Some(StaffRole::Manager))),
        "agent" => Ok(RoleChoice(Some(StaffRole::Agent))),
        "none" => Ok(RoleChoice(None)),
        other => Err(format!("{other:?} is not owner, manager, agent or none")),
    }
}

/// `offers`, `products` or `news`.
pub(crate) fn scope(text: &str) -> Result<Scope, String> {
    match text {
        "offers" => Ok(Scope::Offers),
        "products" => Ok(Scope::Products),
        "news" => Ok(Scope::News),
        other => Err(format!("{other:?} is not offers, products or news")),
    }
}

/// A validity window `[starts_ms, ends_ms)`: from `from_ms` (default `now_ms`) until `until_ms`,
/// or for `length_ms` from the start.
pub(crate) fn window(
    now_ms: u64,
    from_ms: Option<u64>,
    until_ms: Option<u64>,
    length_ms: Option<u64>,
) -> Result<(u64, u64)> {
    let starts_ms = from_ms.unwrap_or(now_ms);
    let ends_ms = match (until_ms, length_ms) {
        (Some(until_ms), None) => until_ms,
        (None, Some(length_ms)) => starts_ms.saturating_add(length_ms),
        (Some(_), Some(_)) => bail!("give an end time or a length, not both"),
        (None, None) => bail!("give an end time (--until-ms) or a length"),
    };
    ensure!(
        ends_ms > starts_ms,
        "the window ends ({ends_ms}) before it starts ({starts_ms})"
    );
    Ok((starts_ms, ends_ms))
}
