//! The commerce commands: `shop`, `catalog`, `cart`, `order`, `coupon` and `promo`. Each calls
//! one SDK method (a few read first, to fill in what was not given) and prints the reply: a
//! concise text, or with `--json` one JSON object, the reply's payload as the wire types
//! serialize it (money as `{"minor": 1250, "currency": "EUR"}`).

mod parse;

use std::fmt::Write as _;

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Args, Subcommand};
use piazza_client::commerce::{
    COMMERCE_PAGE_MAX, CartView, CatalogId, CategoryId, CommandId, CommerceBody, ConsentView,
    CouponCode, CouponSpec, CouponView, Discount, Hours, Label, LineView, Offer, OfferId,
    OfferPrice, OfferTarget, OrderId, OrderView, PaymentPlan, PaymentState, PaymentView,
    ProductCard, ProductId, ProductSpec, ProductView, PromotionId, PromotionReport, Quota, Scope,
    SegmentAtom, SegmentSpec, SegmentTerm, ShopId, ShopInfo, ShopProfile, ShopStats, StaffRole,
    VariantId,
};
use piazza_client::money::{format_money, format_percent};
use piazza_client::{
    Client, ConversationId, ConversationRef, Currency, MediaId, Money, Page, Posted, ProductFilter,
    Seq, UserId,
};
use serde::Serialize;
use serde_json::json;

use super::{Output, PageArgs, history, now_ms};

pub(crate) use self::parse::DAY_MS;

/// Products per page when `catalog list` is not given `--limit`.
const PRODUCTS_PAGE_DEFAULT: u32 = 50;

// ------------------------------------------------------------------------------------- shop

/// `piazza shop …`
#[derive(Debug, Subcommand)]
pub(crate) enum ShopCommand {
    /// Create a shop with you as its owner; prints its settings.
    Create {
        /// The shop's id (letters, digits, `_ . : -`).
        shop: ShopId,
        #[command(flatten)]
        profile: NewProfile,
    },
    /// Print the shop's profile, hours and (for staff) staff and quick replies.
    Info {
        /// The shop.
        shop: ShopId,
    },
    /// Print staff statistics: conversations, first-response times, orders per status.
    Stats {
        /// The shop.
        shop: ShopId,
    },
    /// Change some profile fields (owner, manager); the others stay.
    Edit {
        /// The shop.
        shop: ShopId,
        #[command(flatten)]
        changes: ProfileChanges,
    },
    /// Set the verified badge, or remove it with --off (node operators only).
    Verify {
        /// The shop.
        shop: ShopId,
        /// Remove the badge.
        #[arg(long)]
        off: bool,
    },
    /// Set the opening hours (owner, manager), or with --clear make the shop always open.
    Hours {
        /// The shop.
        shop: ShopId,
        #[command(flatten)]
        hours: HoursArgs,
    },
    /// Set the automatic messages (owner, manager); one not given is turned off.
    Replies {
        /// The shop.
        shop: ShopId,
        /// Sent on a customer's first contact.
        #[arg(long)]
        greeting: Option<String>,
        /// Sent when a customer writes outside opening hours.
        #[arg(long)]
        away: Option<String>,
    },
    /// Add or replace a quick reply (staff), or remove it with --remove.
    QuickReply {
        /// The shop.
        shop: ShopId,
        /// Its shortcut, e.g. /thanks.
        shortcut: String,
        /// Its text.
        #[arg(required_unless_present = "remove")]
        text: Option<String>,
        /// Remove the quick reply.
        #[arg(long, conflicts_with = "text")]
        remove: bool,
    },
    /// Give a user a staff role, or take it away with --role none (owner).
    Staff {
        /// The shop.
        shop: ShopId,
        /// The user.
        user: UserId,
        /// owner, manager, agent or none.
        #[arg(long, value_parser = parse::staff_role)]
        role: parse::RoleChoice,
    },
    /// Assign a customer's conversation to an agent; without --agent, unassign it.
    Assign {
        /// The shop.
        shop: ShopId,
        /// The customer.
        customer: UserId,
        /// The agent (an agent may name themselves for an unassigned customer).
        #[arg(long)]
        agent: Option<UserId>,
    },
    /// Put a label on a customer (staff), or take it off with --remove.
    Label {
        /// The shop.
        shop: ShopId,
        /// The customer.
        customer: UserId,
        /// The label, e.g. vip.
        label: Label,
        /// Remove the label.
        #[arg(long)]
        remove: bool,
    },
    /// Send a product card to a customer (staff).
    SendProduct {
        /// The shop.
        shop: ShopId,
        /// The customer.
        customer: UserId,
        /// The product.
        product: ProductId,
    },
    /// Send a list of products in titled sections to a customer (staff).
    SendList {
        /// The shop.
        shop: ShopId,
        /// The customer.
        customer: UserId,
        /// Header text.
        #[arg(long)]
        header: String,
        /// A section: "Title=product,product,…" (repeat for more sections).
        #[arg(long = "section", required = true, value_parser = parse_section)]
        sections: Vec<(String, Vec<ProductId>)>,
    },
    /// Ask the shop about a product (customer).
    Ask {
        /// The shop.
        shop: ShopId,
        /// The product.
        product: ProductId,
        /// The question.
        text: String,
    },
    /// Send a text into a customer's conversation with the shop (s:SHOP:CUSTOMER).
    Chat {
        /// The shop.
        shop: ShopId,
        /// The customer (staff answering); default: you, writing to the shop.
        #[arg(long)]
        customer: Option<UserId>,
        /// The text.
        text: String,
    },
    /// Print a customer's conversation with the shop, oldest first.
    History {
        /// The shop.
        shop: ShopId,
        /// The customer (staff); default: you.
        #[arg(long)]
        customer: Option<UserId>,
        #[command(flatten)]
        page: PageArgs,
    },
}

/// The profile of a new shop.
#[derive(Debug, Args)]
pub(crate) struct NewProfile {
    /// Name.
    #[arg(long)]
    name: String,
    /// Description.
    #[arg(long, default_value = "")]
    description: String,
    /// Postal address.
    #[arg(long, default_value = "")]
    address: String,
    /// Category, e.g. bakery.
    #[arg(long, default_value = "")]
    category: String,
    /// Website.
    #[arg(long, default_value = "")]
    website: String,
    /// Picture (a media id from `media upload`).
    #[arg(long)]
    avatar: Option<MediaId>,
}

/// Profile fields to change.
#[derive(Debug, Args)]
pub(crate) struct ProfileChanges {
    /// New name.
    #[arg(long)]
    name: Option<String>,
    /// New description.
    #[arg(long)]
    description: Option<String>,
    /// New postal address.
    #[arg(long)]
    address: Option<String>,
    /// New category.
    #[arg(long)]
    category: Option<String>,
    /// New website.
    #[arg(long)]
    website: Option<String>,
    /// New picture (a media id from `media upload`).
    #[arg(long, conflicts_with = "no_avatar")]
    avatar: Option<MediaId>,
    /// Remove the picture.
    #[arg(long)]
    no_avatar: bool,
}

impl ProfileChanges {
    /// `profile` with the changes applied, or `None` if nothing was given.
    fn apply(self, mut profile: ShopProfile) -> Option<ShopProfile> {
        let mut changed = false;
        for (field, value) in [
            (&mut profile.name, self.name),
            (&mut profile.description, self.description),
            (&mut profile.address, self.address),
            (&mut profile.category, self.category),
            (&mut profile.website, self.website),
        ] {
            if let Some(value) = value {
                *field = value;
                changed = true;
            }
        }
        if let Some(avatar) = self.avatar {
            profile.avatar = Some(avatar);
            changed = true;
        }
        if self.no_avatar {
            profile.avatar = None;
            changed = true;
        }
        changed.then_some(profile)
    }
}

/// Opening hours.
#[derive(Debug, Args)]
pub(crate) struct HoursArgs {
    /// IANA time zone of the hours, e.g. Europe/Rome.
    #[arg(long, required_unless_present = "clear")]
    tz: Option<String>,
    /// Open on these days at these times: "mon-fri 09:00-18:00", "sat,sun 10:00-13:00",
    /// "mon-fri 09:00-13:00,15:00-19:00" (repeat for more).
    #[arg(long = "open")]
    open: Vec<String>,
    /// Closed all day on this date, YYYY-MM-DD (repeat for more).
    #[arg(long = "closed")]
    closed: Vec<String>,
    /// Open only at these times on this date: "2026-12-24 09:00-13:00" (repeat for more).
    #[arg(long = "special")]
    special: Vec<String>,
    /// Remove the hours: always open.
    #[arg(long, conflicts_with_all = ["tz", "open", "closed", "special"])]
    clear: bool,
}

impl HoursArgs {
    /// The hours to set: `None` to clear them.
    fn hours(self) -> Result<Option<Hours>> {
        let Some(time_zone) = self.tz else {
            return Ok(None);
        };
        let mut exceptions = Vec::new();
        for date in &self.closed {
            exceptions.push(parse::closed_day(date)?);
        }
        for special in &self.special {
            exceptions.push(parse::special_day(special)?);
        }
        Ok(Some(Hours {
            time_zone,
            weekly: parse::weekly(&self.open)?,
            exceptions,
        }))
    }
}

fn parse_section(text: &str) -> Result<(String, Vec<ProductId>), String> {
    parse::section(text).map_err(|e| format!("{e:#}"))
}

pub(crate) async fn shop(client: &Client, out: &Output, command: ShopCommand) -> Result<()> {
    match command {
        ShopCommand::Create { shop, profile } => {
            let profile = ShopProfile {
                name: profile.name,
                description: profile.description,
                address: profile.address,
                category: profile.category,
                website: profile.website,
                avatar: profile.avatar,
            };
            let info = client.create_shop(&shop, profile).await?;
            print(
                out,
                &format!("created shop {shop}\n{}", show_info(&info)),
                &info,
            )
        }
        ShopCommand::Info { shop } => {
            let info = client.shop_info(&shop).await?;
            print(out, &show_info(&info), &info)
        }
        ShopCommand::Stats { shop } => {
            let stats = client.shop_stats(&shop).await?;
            print(out, &show_stats(&stats), &stats)
        }
        ShopCommand::Edit { shop, changes } => {
            let info = client.shop_info(&shop).await?;
            let profile = changes.apply(info.profile).ok_or_else(|| {
                anyhow!("give --name, --description, --address, --category, --website or --avatar")
            })?;
            client.update_shop_profile(&shop, profile.clone()).await?;
            print(out, &format!("updated the profile of {shop}"), &profile)
        }
        ShopCommand::Verify { shop, off } => {
            client.set_verified(&shop, !off).await?;
            let state = if off { "not verified" } else { "verified" };
            done(
                out,
                &format!("{shop} is {state}"),
                json!({ "shop": shop, "verified": !off }),
            )
        }
        ShopCommand::Hours { shop, hours } => {
            let hours = hours.hours()?;
            client.set_hours(&shop, hours.clone()).await?;
            let human = match &hours {
                Some(hours) => format!("hours of {shop}: {}", show_hours(hours)),
                None => format!("{shop} is always open"),
            };
            done(out, &human, json!({ "shop": shop, "hours": hours }))
        }
        ShopCommand::Replies {
            shop,
            greeting,
            away,
        } => {
            client
                .set_auto_replies(&shop, greeting.clone(), away.clone())
                .await?;
            let state = |text: &Option<String>| if text.is_some() { "on" } else { "off" };
            done(
                out,
                &format!(
                    "greeting {}, away message {}",
                    state(&greeting),
                    state(&away)
                ),
                json!({ "shop": shop, "greeting": greeting, "away": away }),
            )
        }
        ShopCommand::QuickReply {
            shop,
            shortcut,
            text,
            remove,
        } => {
            match text {
                Some(text) if !remove => {
                    client
                        .put_quick_reply(&shop, shortcut.clone(), text)
                        .await?;
                }
                _ => client.remove_quick_reply(&shop, shortcut.clone()).await?,
            }
            let verb = if remove { "removed" } else { "saved" };
            done(
                out,
                &format!("quick reply {shortcut} {verb}"),
                json!({ "shop": shop, "shortcut": shortcut, "removed": remove }),
            )
        }
        ShopCommand::Staff {
            shop,
            user,
            role: parse::RoleChoice(role),
        } => {
            client.set_staff(&shop, user.clone(), role).await?;
            let human = match role {
                Some(role) => format!("{user} is now {} of {shop}", role_name(role)),
                None => format!("{user} is no longer staff of {shop}"),
            };
            done(
                out,
                &human,
                json!({ "shop": shop, "user": user.as_str(), "role": role }),
            )
        }
        ShopCommand::Assign {
            shop,
            customer,
            agent,
        } => {
            client
                .assign(&shop, customer.clone(), agent.clone())
                .await?;
            let human = match &agent {
                Some(agent) => format!("{customer} is assigned to {agent}"),
                None => format!("{customer} is unassigned"),
            };
            done(
                out,
                &human,
                json!({
                    "shop": shop,
                    "customer": customer.as_str(),
                    "agent": agent.as_ref().map(UserId::as_str),
                }),
            )
        }
        ShopCommand::Label {
            shop,
            customer,
            label,
            remove,
        } => {
            client
                .label_customer(&shop, customer.clone(), label.clone(), !remove)
                .await?;
            let verb = if remove { "removed from" } else { "put on" };
            done(
                out,
                &format!("label {label} {verb} {customer}"),
                json!({
                    "shop": shop,
                    "customer": customer.as_str(),
                    "label": label,
                    "added": !remove,
                }),
            )
        }
        ShopCommand::SendProduct {
            shop,
            customer,
            product,
        } => posted(out, &client.send_product(&shop, customer, product).await?),
        ShopCommand::SendList {
            shop,
            customer,
            header,
            sections,
        } => posted(
            out,
            &client
                .send_product_list(&shop, customer, header, sections)
                .await?,
        ),
        ShopCommand::Ask {
            shop,
            product,
            text,
        } => posted(out, &client.ask_about(&shop, product, text).await?),
        ShopCommand::Chat {
            shop,
            customer,
            text,
        } => {
            let conversation = shop_conversation(client, shop, customer);
            out.ack(&client.send(conversation, text, None).await?)
        }
        ShopCommand::History {
            shop,
            customer,
            page,
        } => {
            history(
                client,
                out,
                shop_conversation(client, shop, customer),
                &page,
            )
            .await
        }
    }
}

/// `s:<shop>:<customer>`, the caller being the customer unless another is named.
fn shop_conversation(client: &Client, shop: ShopId, customer: Option<UserId>) -> ConversationRef {
    let customer = customer.unwrap_or_else(|| client.user().clone());
    ConversationRef::Id(ConversationId::Shop { shop, customer })
}

// ---------------------------------------------------------------------------------- catalog

/// `piazza catalog …`
#[derive(Debug, Subcommand)]
pub(crate) enum CatalogCommand {
    /// Create or rename a catalog (owner, manager).
    Put {
        /// The shop.
        shop: ShopId,
        /// The catalog's id.
        catalog: CatalogId,
        /// Its title.
        #[arg(long)]
        title: String,
    },
    /// Create or rename a category (owner, manager).
    Category {
        /// The shop.
        shop: ShopId,
        /// The category's id.
        category: CategoryId,
        /// Its title.
        #[arg(long)]
        title: String,
    },
    /// Create or replace a product (owner, manager). Stock is set with `catalog stock`.
    Product(ProductArgs),
    /// Set the units on hand of a product or variant (owner, manager).
    Stock {
        /// The shop.
        shop: ShopId,
        /// The product.
        product: ProductId,
        /// The variant (products with variants keep stock per variant).
        #[arg(long)]
        variant: Option<VariantId>,
        /// Units on hand.
        #[arg(
            long,
            required_unless_present = "untracked",
            conflicts_with = "untracked"
        )]
        on_hand: Option<u32>,
        /// Do not track stock: unlimited.
        #[arg(long)]
        untracked: bool,
    },
    /// Create or replace a special offer: a price for a time window (owner, manager).
    Offer(OfferArgs),
    /// Remove a special offer (owner, manager).
    RemoveOffer {
        /// The shop.
        shop: ShopId,
        /// The offer.
        offer: OfferId,
    },
    /// List products with their prices now and stock (customers see active ones only).
    List {
        /// The shop.
        shop: ShopId,
        /// Only this catalog.
        #[arg(long)]
        catalog: Option<CatalogId>,
        /// Only this category.
        #[arg(long)]
        category: Option<CategoryId>,
        /// Products after this id (the next page).
        #[arg(long)]
        after: Option<ProductId>,
        /// At most this many (1..=100).
        #[arg(long, default_value_t = PRODUCTS_PAGE_DEFAULT,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(COMMERCE_PAGE_MAX)))]
        limit: u32,
    },
    /// Print one product with its price now and stock.
    Show {
        /// The shop.
        shop: ShopId,
        /// The product.
        product: ProductId,
    },
}

/// A product definition.
#[derive(Debug, Args)]
pub(crate) struct ProductArgs {
    /// The shop.
    shop: ShopId,
    /// The product's id.
    product: ProductId,
    /// The catalog it is listed in.
    #[arg(long)]
    catalog: CatalogId,
    /// Title shown to customers.
    #[arg(long)]
    title: String,
    /// Base price, e.g. 12.50 (in --currency; never a float: exactly the decimals written).
    #[arg(long)]
    price: String,
    /// ISO 4217 currency code, e.g. EUR.
    #[arg(long)]
    currency: Currency,
    /// Description.
    #[arg(long, default_value = "")]
    description: String,
    /// A category it is in (repeat for more).
    #[arg(long = "category")]
    categories: Vec<CategoryId>,
    /// A picture, by media id (repeat for more).
    #[arg(long = "media")]
    media: Vec<MediaId>,
    /// A variant, "ID:TITLE" or "ID:TITLE:PRICE" (repeat for more; then every order line names
    /// a variant).
    #[arg(long = "variant")]
    variants: Vec<String>,
    /// List it, but do not sell it.
    #[arg(long)]
    inactive: bool,
}

impl ProductArgs {
    fn spec(self) -> Result<(ShopId, ProductSpec)> {
        let price = parse::amount(&self.price, self.currency).context("--price")?;
        let variants = self
            .variants
            .iter()
            .map(|text| parse::variant(text, self.currency))
            .collect::<Result<Vec<_>>>()?;
        let spec = ProductSpec {
            id: self.product,
            catalog: self.catalog,
            title: self.title,
            description: self.description,
            price,
            categories: self.categories,
            media: self.media,
            variants,
            active: !self.inactive,
        };
        Ok((self.shop, spec))
    }
}

/// A special offer.
#[derive(Debug, Args)]
pub(crate) struct OfferArgs {
    /// The shop.
    shop: ShopId,
    /// The offer's id.
    offer: OfferId,
    #[command(flatten)]
    target: OfferTargetArgs,
    /// With --product: only this variant of it.
    #[arg(long)]
    variant: Option<VariantId>,
    /// The offer price, e.g. 9.99 (only for --product; in --currency).
    #[arg(long, requires = "currency")]
    price: Option<String>,
    /// Currency of --price.
    #[arg(long)]
    currency: Option<Currency>,
    /// Percentage off, e.g. 15 or 12.5.
    #[arg(long, conflicts_with = "price", required_unless_present = "price")]
    percent_off: Option<String>,
    #[command(flatten)]
    window: WindowArgs,
    /// Valid for this many seconds from the start (instead of --until-ms).
    #[arg(
        long,
        conflicts_with = "until_ms",
        required_unless_present = "until_ms"
    )]
    for_secs: Option<u64>,
}

/// What an offer applies to: exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct OfferTargetArgs {
    /// One product (with --variant: one variant of it).
    #[arg(long)]
    product: Option<ProductId>,
    /// Every product of this category.
    #[arg(long)]
    category: Option<CategoryId>,
    /// Every product of this catalog.
    #[arg(long)]
    catalog: Option<CatalogId>,
    /// Every product of the shop (a sales period).
    #[arg(long)]
    all: bool,
}

/// A validity window: from --from-ms (default now) until --until-ms, or for a length given by
/// the command.
#[derive(Debug, Args)]
pub(crate) struct WindowArgs {
    /// Valid from, ms since the Unix epoch (default: now).
    #[arg(long)]
    from_ms: Option<u64>,
    /// Valid until (exclusive), ms since the Unix epoch.
    #[arg(long)]
    until_ms: Option<u64>,
}

impl OfferArgs {
    fn offer(self, now_ms: u64) -> Result<(ShopId, Offer)> {
        let target = match (self.target, self.variant) {
            (
                OfferTargetArgs {
                    product: Some(product),
                    ..
                },
                Some(variant),
            ) => OfferTarget::Variant(product, variant),
            (
                OfferTargetArgs {
                    product: Some(product),
                    ..
                },
                None,
            ) => OfferTarget::Product(product),
            (_, Some(_)) => bail!("--variant needs --product"),
            (
                OfferTargetArgs {
                    category: Some(category),
                    ..
                },
                None,
            ) => OfferTarget::Category(category),
            (
                OfferTargetArgs {
                    catalog: Some(catalog),
                    ..
                },
                None,
            ) => OfferTarget::Catalog(catalog),
            (OfferTargetArgs { all: true, .. }, None) => OfferTarget::All,
            _ => bail!("give --product, --category, --catalog or --all"),
        };
        let price = match (self.price, self.currency, self.percent_off) {
            (Some(price), Some(currency), None) => {
                OfferPrice::Fixed(parse::amount(&price, currency).context("--price")?)
            }
            (None, _, Some(percent)) => OfferPrice::PercentOff {
                basis_points: piazza_client::money::parse_percent(&percent)
                    .context("--percent-off")?,
            },
            _ => bail!("give --price with --currency, or --percent-off"),
        };
        let one_product = matches!(target, OfferTarget::Product(_) | OfferTarget::Variant(..));
        if matches!(price, OfferPrice::Fixed(_)) && !one_product {
            bail!("--price sets the price of one product: use --percent-off for many");
        }
        let (starts_ms, ends_ms) = parse::window(
            now_ms,
            self.window.from_ms,
            self.window.until_ms,
            self.for_secs.map(|secs| secs.saturating_mul(1000)),
        )?;
        Ok((
            self.shop,
            Offer {
                id: self.offer,
                target,
                price,
                starts_ms,
                ends_ms,
            },
        ))
    }
}

pub(crate) async fn catalog(client: &Client, out: &Output, command: CatalogCommand) -> Result<()> {
    match command {
        CatalogCommand::Put {
            shop,
            catalog,
            title,
        } => {
            client
                .put_catalog(&shop, catalog.clone(), title.clone())
                .await?;
            done(
                out,
                &format!("catalog {catalog} saved: {title}"),
                json!({ "shop": shop, "catalog": catalog, "title": title }),
            )
        }
        CatalogCommand::Category {
            shop,
            category,
            title,
        } => {
            client
                .put_category(&shop, category.clone(), title.clone())
                .await?;
            done(
                out,
                &format!("category {category} saved: {title}"),
                json!({ "shop": shop, "category": category, "title": title }),
            )
        }
        CatalogCommand::Product(args) => {
            let (shop, spec) = args.spec()?;
            client.put_product(&shop, spec.clone()).await?;
            print(
                out,
                &format!(
                    "product {} saved: {} at {}{}",
                    spec.id,
                    spec.title,
                    format_money(spec.price),
                    if spec.active { "" } else { " (inactive)" }
                ),
                &spec,
            )
        }
        CatalogCommand::Stock {
            shop,
            product,
            variant,
            on_hand,
            ..
        } => {
            client
                .set_stock(&shop, product.clone(), variant.clone(), on_hand)
                .await?;
            let what = match &variant {
                Some(variant) => format!("{product}/{variant}"),
                None => product.to_string(),
            };
            let human = match on_hand {
                Some(units) => format!("{what}: {units} on hand"),
                None => format!("{what}: stock not tracked"),
            };
            done(
                out,
                &human,
                json!({ "shop": shop, "product": product, "variant": variant, "on_hand": on_hand }),
            )
        }
        CatalogCommand::Offer(args) => {
            let (shop, offer) = args.offer(now_ms())?;
            client.put_offer(&shop, offer.clone()).await?;
            print(
                out,
                &format!("offer {} saved: {}", offer.id, show_offer(&offer)),
                &offer,
            )
        }
        CatalogCommand::RemoveOffer { shop, offer } => {
            client.remove_offer(&shop, offer.clone()).await?;
            done(
                out,
                &format!("offer {offer} removed"),
                json!({ "shop": shop, "offer": offer, "removed": true }),
            )
        }
        CatalogCommand::List {
            shop,
            catalog,
            category,
            after,
            limit,
        } => {
            let filter = ProductFilter { catalog, category };
            let page = client.products(&shop, filter, after, limit).await?;
            let mut human = page
                .items
                .iter()
                .map(show_product)
                .collect::<Vec<_>>()
                .join("\n");
            if human.is_empty() {
                human.push_str("no products");
            }
            if let (true, Some(last)) = (page.more, page.items.last()) {
                let _ = write!(human, "\n… more: --after {}", last.spec.id);
            }
            print(out, &human, &page_json("products", &page))
        }
        CatalogCommand::Show { shop, product } => {
            let view = client.product(&shop, product).await?;
            print(out, &show_product(&view), &view)
        }
    }
}

// ------------------------------------------------------------------------------------- cart

/// `piazza cart …`
#[derive(Debug, Subcommand)]
pub(crate) enum CartCommand {
    /// Add units of a product to your cart.
    Add {
        #[command(flatten)]
        line: CartLine,
        /// How many.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        quantity: u32,
    },
    /// Set the quantity of a line (0 removes it).
    Set {
        #[command(flatten)]
        line: CartLine,
        /// How many.
        #[arg(long)]
        quantity: u32,
    },
    /// Remove a line.
    Remove {
        #[command(flatten)]
        line: CartLine,
    },
    /// Empty your cart.
    Clear {
        /// The shop.
        shop: ShopId,
    },
    /// Print your cart, priced now.
    Show {
        /// The shop.
        shop: ShopId,
    },
}

/// One line of a cart.
#[derive(Debug, Args)]
pub(crate) struct CartLine {
    /// The shop.
    shop: ShopId,
    /// The product.
    product: ProductId,
    /// Its variant, for a product with variants.
    #[arg(long)]
    variant: Option<VariantId>,
}

pub(crate) async fn cart(client: &Client, out: &Output, command: CartCommand) -> Result<()> {
    let cart = match command {
        CartCommand::Add { line, quantity } => {
            client
                .cart_add(&line.shop, line.product, line.variant, quantity)
                .await?
        }
        CartCommand::Set { line, quantity } => {
            client
                .cart_set(&line.shop, line.product, line.variant, quantity)
                .await?
        }
        CartCommand::Remove { line } => {
            client
                .cart_remove(&line.shop, line.product, line.variant)
                .await?
        }
        CartCommand::Clear { shop } => client.cart_clear(&shop).await?,
        CartCommand::Show { shop } => client.cart(&shop).await?,
    };
    print(out, &show_cart(&cart), &cart)
}

// ------------------------------------------------------------------------------------ order

/// `piazza order …`
#[derive(Debug, Subcommand)]
pub(crate) enum OrderCommand {
    /// Send your cart as an order (stock is reserved; the order appears in your conversation
    /// with the shop). Prints the order; checking out again with the same --order answers the
    /// same order.
    Checkout {
        /// The shop.
        shop: ShopId,
        /// The order's id (default: a fresh one, printed).
        #[arg(long)]
        order: Option<OrderId>,
        /// A coupon code to redeem.
        #[arg(long)]
        coupon: Option<CouponCode>,
    },
    /// Accept an order (staff).
    Accept(OrderTarget),
    /// Reject an order (staff).
    Reject {
        #[command(flatten)]
        target: OrderTarget,
        /// Why (shown to the customer).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Choose how to pay an accepted order and start the first payment (customer).
    Pay {
        #[command(flatten)]
        target: OrderTarget,
        /// Pay in this many instalments (2..) instead of in full.
        #[arg(long, requires = "every_days", value_parser = clap::value_parser!(u32).range(2..))]
        instalments: Option<u32>,
        /// Days between two instalments.
        #[arg(long, requires = "instalments", value_parser = clap::value_parser!(u64).range(1..))]
        every_days: Option<u64>,
    },
    /// Try a declined payment again (customer).
    RetryPay(OrderTarget),
    /// Cancel an order.
    Cancel {
        #[command(flatten)]
        target: OrderTarget,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Mark an order shipped or handed over (staff).
    Fulfil {
        #[command(flatten)]
        target: OrderTarget,
        /// Carrier and tracking number, or a URL.
        #[arg(long)]
        tracking: Option<String>,
    },
    /// Mark an order delivered.
    Deliver(OrderTarget),
    /// Mark an order completed.
    Complete(OrderTarget),
    /// Refund money of a paid order (manager, owner).
    Refund {
        #[command(flatten)]
        target: OrderTarget,
        /// How much, e.g. 5.00 (default: everything captured and not yet refunded).
        #[arg(long)]
        amount: Option<String>,
        /// Currency of --amount (default: the order's).
        #[arg(long, requires = "amount")]
        currency: Option<Currency>,
    },
    /// Print one order.
    Show {
        /// The shop.
        shop: ShopId,
        /// The order.
        order: OrderId,
    },
    /// List your orders (staff: everyone's), in id order.
    List {
        /// The shop.
        shop: ShopId,
        /// Orders after this id (the next page).
        #[arg(long)]
        after: Option<OrderId>,
        /// At most this many (1..=100).
        #[arg(long, default_value_t = COMMERCE_PAGE_MAX,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(COMMERCE_PAGE_MAX)))]
        limit: u32,
    },
}

/// The order a command is for.
#[derive(Debug, Args)]
pub(crate) struct OrderTarget {
    /// The shop.
    shop: ShopId,
    /// The order.
    order: OrderId,
    /// The command's id: repeating a command with the same id changes nothing (default: a
    /// fresh one).
    #[arg(long)]
    command_id: Option<CommandId>,
}

pub(crate) async fn order(client: &Client, out: &Output, command: OrderCommand) -> Result<()> {
    use piazza_client::commerce::OrderCommand as Action;

    let (target, action) = match command {
        OrderCommand::Checkout {
            shop,
            order,
            coupon,
        } => {
            let order = order.unwrap_or_else(|| client.new_order_id());
            let view = client.checkout(&shop, order, coupon).await?;
            return print(out, &show_order(&view), &view);
        }
        OrderCommand::Show { shop, order } => {
            let view = client.order(&shop, order).await?;
            return print(out, &show_order(&view), &view);
        }
        OrderCommand::List { shop, after, limit } => {
            let page = client.orders(&shop, after, limit).await?;
            let mut human = page
                .items
                .iter()
                .map(order_summary)
                .collect::<Vec<_>>()
                .join("\n");
            if human.is_empty() {
                human.push_str("no orders");
            }
            if let (true, Some(last)) = (page.more, page.items.last()) {
                let _ = write!(human, "\n… more: --after {}", last.order);
            }
            return print(out, &human, &page_json("orders", &page));
        }
        OrderCommand::Accept(target) => (target, Action::Accept),
        OrderCommand::Reject { target, reason } => (target, Action::Reject { reason }),
        OrderCommand::Pay {
            target,
            instalments,
            every_days,
        } => {
            let plan = match (instalments, every_days) {
                (Some(count), Some(days)) => PaymentPlan::Instalments {
                    count,
                    interval_ms: days.saturating_mul(DAY_MS),
                },
                _ => PaymentPlan::Full,
            };
            (target, Action::RequestPayment { plan })
        }
        OrderCommand::RetryPay(target) => (target, Action::RetryPayment),
        OrderCommand::Cancel { target, reason } => (target, Action::Cancel { reason }),
        OrderCommand::Fulfil { target, tracking } => (target, Action::Fulfil { tracking }),
        OrderCommand::Deliver(target) => (target, Action::MarkDelivered),
        OrderCommand::Complete(target) => (target, Action::Complete),
        OrderCommand::Refund {
            target,
            amount,
            currency,
        } => {
            let amount = refund_amount(client, &target, amount, currency).await?;
            (target, Action::Refund { amount })
        }
    };
    let command_id = target.command_id.unwrap_or_else(|| client.new_command_id());
    let view = client
        .order_command(&target.shop, target.order, command_id, action)
        .await?;
    print(out, &show_order(&view), &view)
}

/// The amount to refund: as given (in the order's currency unless another is named), or
/// everything captured and not yet refunded.
async fn refund_amount(
    client: &Client,
    target: &OrderTarget,
    amount: Option<String>,
    currency: Option<Currency>,
) -> Result<Money> {
    if let (Some(amount), Some(currency)) = (&amount, currency) {
        return parse::amount(amount, currency).context("--amount");
    }
    let view = client.order(&target.shop, target.order.clone()).await?;
    match amount {
        Some(amount) => parse::amount(&amount, view.total.currency()).context("--amount"),
        None => {
            let refundable = refundable(&view)?;
            ensure!(
                refundable.minor() > 0,
                "nothing to refund: order {} has no captured money left",
                view.order
            );
            Ok(refundable)
        }
    }
}

/// Captured and not yet refunded, over all payments of the order.
fn refundable(order: &OrderView) -> Result<Money> {
    let mut sum = Money::new(0, order.total.currency());
    for payment in &order.payments {
        sum = sum
            .checked_add(payment.captured)?
            .checked_sub(payment.refunded)?;
    }
    Ok(sum)
}

// ----------------------------------------------------------------------------------- coupon

/// `piazza coupon …`
#[derive(Debug, Subcommand)]
pub(crate) enum CouponCommand {
    /// Create or change a coupon (owner, manager).
    Put(CouponArgs),
    /// Enable a coupon.
    Enable {
        /// The shop.
        shop: ShopId,
        /// The code.
        code: CouponCode,
    },
    /// Disable a coupon.
    Disable {
        /// The shop.
        shop: ShopId,
        /// The code.
        code: CouponCode,
    },
    /// List the shop's coupons with their redemptions.
    List {
        /// The shop.
        shop: ShopId,
    },
}

/// A coupon definition.
#[derive(Debug, Args)]
pub(crate) struct CouponArgs {
    /// The shop.
    shop: ShopId,
    /// The code customers type (A-Z 0-9 _ -; lower case is the same code).
    code: CouponCode,
    /// Percentage off the order total, e.g. 10 or 12.5.
    #[arg(long, conflicts_with = "amount", required_unless_present = "amount")]
    percent: Option<String>,
    /// A fixed amount off, e.g. 5.00 (in --currency).
    #[arg(long, requires = "currency")]
    amount: Option<String>,
    /// Currency of --amount and --minimum.
    #[arg(long)]
    currency: Option<Currency>,
    #[command(flatten)]
    window: WindowArgs,
    /// Valid for this many days from the start (instead of --until-ms).
    #[arg(long, conflicts_with = "until_ms", required_unless_present = "until_ms",
          value_parser = clap::value_parser!(u64).range(1..))]
    for_days: Option<u64>,
    /// Most redemptions in all.
    #[arg(long)]
    total_max: Option<u32>,
    /// Most redemptions per customer.
    #[arg(long)]
    per_customer_max: Option<u32>,
    /// Smallest order total it applies to, e.g. 20.00 (in --currency).
    #[arg(long, requires = "currency")]
    minimum: Option<String>,
}

impl CouponArgs {
    fn spec(self, now_ms: u64) -> Result<(ShopId, CouponSpec)> {
        let discount = match (self.percent, &self.amount, self.currency) {
            (Some(percent), None, _) => Discount::Percent {
                basis_points: piazza_client::money::parse_percent(&percent).context("--percent")?,
            },
            (None, Some(amount), Some(currency)) => {
                Discount::Amount(parse::amount(amount, currency).context("--amount")?)
            }
            _ => bail!("give --percent, or --amount with --currency"),
        };
        let minimum = match (self.minimum, self.currency) {
            (Some(minimum), Some(currency)) => {
                Some(parse::amount(&minimum, currency).context("--minimum")?)
            }
            (Some(_), None) => bail!("--minimum needs --currency"),
            (None, _) => None,
        };
        let (starts_ms, ends_ms) = parse::window(
            now_ms,
            self.window.from_ms,
            self.window.until_ms,
            self.for_days.map(|days| days.saturating_mul(DAY_MS)),
        )?;
        let spec = CouponSpec {
            code: self.code,
            discount,
            starts_ms,
            ends_ms,
            total_max: self.total_max,
            per_customer_max: self.per_customer_max,
            minimum,
        };
        Ok((self.shop, spec))
    }
}

pub(crate) async fn coupon(client: &Client, out: &Output, command: CouponCommand) -> Result<()> {
    match command {
        CouponCommand::Put(args) => {
            let (shop, spec) = args.spec(now_ms())?;
            client.put_coupon(&shop, spec.clone()).await?;
            print(
                out,
                &format!("coupon {} saved: {}", spec.code, show_coupon_spec(&spec)),
                &spec,
            )
        }
        CouponCommand::Enable { shop, code } => set_coupon(client, out, shop, code, true).await,
        CouponCommand::Disable { shop, code } => set_coupon(client, out, shop, code, false).await,
        CouponCommand::List { shop } => {
            let coupons = client.coupons(&shop).await?;
            let human = if coupons.is_empty() {
                "no coupons".to_owned()
            } else {
                coupons
                    .iter()
                    .map(show_coupon)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print(out, &human, &json!({ "coupons": coupons }))
        }
    }
}

async fn set_coupon(
    client: &Client,
    out: &Output,
    shop: ShopId,
    code: CouponCode,
    enabled: bool,
) -> Result<()> {
    client
        .set_coupon_enabled(&shop, code.clone(), enabled)
        .await?;
    let state = if enabled { "enabled" } else { "disabled" };
    done(
        out,
        &format!("coupon {code} {state}"),
        json!({ "shop": shop, "code": code, "enabled": enabled }),
    )
}

// ------------------------------------------------------------------------------------ promo

/// `piazza promo …`
#[derive(Debug, Subcommand)]
pub(crate) enum PromoCommand {
    /// Consent to promotions of a kind from the shop (customer).
    OptIn {
        /// The shop.
        shop: ShopId,
        /// offers, products or news.
        #[arg(long, value_parser = parse::scope)]
        scope: Scope,
    },
    /// Withdraw consent (customer).
    OptOut {
        /// The shop.
        shop: ShopId,
        /// offers, products or news.
        #[arg(long, value_parser = parse::scope)]
        scope: Scope,
    },
    /// Print your consents with the shop.
    Consents {
        /// The shop.
        shop: ShopId,
    },
    /// Set how many promotions a customer may receive per rolling window (owner, manager).
    Quota {
        /// The shop.
        shop: ShopId,
        /// At most this many promotions …
        #[arg(long)]
        count: u32,
        /// … per this many days.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        window_days: u64,
    },
    /// Send a promotion to the consenting customers of a segment, within their quota (owner,
    /// manager). The conditions given together must all hold; none: every consenting customer.
    Send(PromoArgs),
}

/// A promotion.
#[derive(Debug, Args)]
pub(crate) struct PromoArgs {
    /// The shop.
    shop: ShopId,
    /// The promotion's id (sending again with the same id reaches nobody twice).
    promotion: PromotionId,
    /// offers, products or news: only customers who consented to it receive it.
    #[arg(long, value_parser = parse::scope)]
    scope: Scope,
    /// The message.
    #[arg(long)]
    text: String,
    /// Customers with this label (repeat: all of them).
    #[arg(long = "label")]
    labels: Vec<Label>,
    /// Customers without this label (repeat: none of them).
    #[arg(long = "without-label")]
    without_labels: Vec<Label>,
    /// Customers who ever paid for an order.
    #[arg(long)]
    past_purchasers: bool,
    /// Customers who paid for this product (repeat: all of them).
    #[arg(long = "purchased")]
    purchased: Vec<ProductId>,
    /// Customers who asked about or were shown this product (repeat: all of them).
    #[arg(long = "interested-in")]
    interested_in: Vec<ProductId>,
    /// A product to show with the message.
    #[arg(long)]
    product: Option<ProductId>,
}

impl PromoArgs {
    /// The one clause of the conditions given (no clause: every consenting customer).
    fn segment(&self) -> SegmentSpec {
        let term = |negated, atom| SegmentTerm { negated, atom };
        let mut clause = Vec::new();
        clause.extend(
            self.labels
                .iter()
                .map(|label| term(false, SegmentAtom::Label(label.clone()))),
        );
        clause.extend(
            self.without_labels
                .iter()
                .map(|label| term(true, SegmentAtom::Label(label.clone()))),
        );
        if self.past_purchasers {
            clause.push(term(false, SegmentAtom::PastPurchaser));
        }
        clause.extend(
            self.purchased
                .iter()
                .map(|product| term(false, SegmentAtom::Purchased(product.clone()))),
        );
        clause.extend(
            self.interested_in
                .iter()
                .map(|product| term(false, SegmentAtom::InterestedIn(product.clone()))),
        );
        SegmentSpec {
            any: if clause.is_empty() {
                Vec::new()
            } else {
                vec![clause]
            },
        }
    }
}

pub(crate) async fn promo(client: &Client, out: &Output, command: PromoCommand) -> Result<()> {
    match command {
        PromoCommand::OptIn { shop, scope } => {
            client.opt_in(&shop, scope).await?;
            done(
                out,
                &format!("you receive {} from {shop}", scope_name(scope)),
                json!({ "shop": shop, "scope": scope, "granted": true }),
            )
        }
        PromoCommand::OptOut { shop, scope } => {
            client.opt_out(&shop, scope).await?;
            done(
                out,
                &format!("you no longer receive {} from {shop}", scope_name(scope)),
                json!({ "shop": shop, "scope": scope, "granted": false }),
            )
        }
        PromoCommand::Consents { shop } => {
            let consents = client.consents(&shop).await?;
            let human = if consents.is_empty() {
                "no consents".to_owned()
            } else {
                consents
                    .iter()
                    .map(show_consent)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            print(out, &human, &json!({ "consents": consents }))
        }
        PromoCommand::Quota {
            shop,
            count,
            window_days,
        } => {
            let quota = Quota {
                count_max: count,
                window_ms: window_days.saturating_mul(DAY_MS),
            };
            client.set_quota(&shop, quota).await?;
            print(
                out,
                &format!("at most {count} promotions per customer every {window_days} days"),
                &quota,
            )
        }
        PromoCommand::Send(args) => {
            let segment = args.segment();
            let report = client
                .promote(
                    &args.shop,
                    args.promotion.clone(),
                    args.scope,
                    segment,
                    args.text,
                    args.product,
                )
                .await?;
            print(
                out,
                &format!("promotion {}: {}", args.promotion, show_report(&report)),
                &report,
            )
        }
    }
}

// --------------------------------------------------------------------------------- printing

/// Prints `human`, or with `--json` the serialized `value`.
fn print<T: Serialize>(out: &Output, human: &str, value: &T) -> Result<()> {
    out.line(human, serde_json::to_value(value).context("encode JSON")?)
}

/// Prints the outcome of an operation answered with `Done`.
fn done(out: &Output, human: &str, json: serde_json::Value) -> Result<()> {
    out.line(human, json)
}

fn posted(out: &Output, posted: &Posted) -> Result<()> {
    out.line(
        &format!("sent to {} seq {}", posted.conversation, posted.seq),
        json!({ "conversation": posted.conversation.to_string(), "seq": posted.seq.get() }),
    )
}

/// `{"<name>": [...], "more": bool}`.
fn page_json<T: Serialize>(name: &str, page: &Page<T>) -> serde_json::Value {
    json!({ name: page.items, "more": page.more })
}

fn role_name(role: StaffRole) -> &'static str {
    match role {
        StaffRole::Owner => "owner",
        StaffRole::Manager => "manager",
        StaffRole::Agent => "agent",
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Offers => "offers",
        Scope::Products => "products",
        Scope::News => "news",
    }
}

fn weekday_name(weekday: u8) -> &'static str {
    match weekday {
        1 => "mon",
        2 => "tue",
        3 => "wed",
        4 => "thu",
        5 => "fri",
        6 => "sat",
        7 => "sun",
        _ => "?",
    }
}

/// `09:30`.
fn clock(minute_of_day: u16) -> String {
    format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

/// `Europe/Rome: mon 09:00-18:00, sat 10:00-13:00; closed 2026-12-25`.
pub(crate) fn show_hours(hours: &Hours) -> String {
    let weekly = hours
        .weekly
        .iter()
        .map(|w| {
            format!(
                "{} {}-{}",
                weekday_name(w.weekday),
                clock(w.opens_min),
                clock(w.closes_min)
            )
        })
        .collect::<Vec<_>>();
    let mut text = format!(
        "{}: {}",
        hours.time_zone,
        if weekly.is_empty() {
            "closed every day".to_owned()
        } else {
            weekly.join(", ")
        }
    );
    for exception in &hours.exceptions {
        if exception.windows.is_empty() {
            let _ = write!(text, "; closed {}", exception.date);
        } else {
            let windows = exception
                .windows
                .iter()
                .map(|&(opens, closes)| format!("{}-{}", clock(opens), clock(closes)))
                .collect::<Vec<_>>()
                .join(",");
            let _ = write!(text, "; {} {windows}", exception.date);
        }
    }
    text
}

fn show_info(info: &ShopInfo) -> String {
    let profile = &info.profile;
    let mut text = format!(
        "{} (shop {}){}{}",
        profile.name,
        info.shop,
        if info.verified { ", verified" } else { "" },
        if info.open_now {
            ", open now"
        } else {
            ", closed now"
        },
    );
    for (label, value) in [
        ("category", &profile.category),
        ("address", &profile.address),
        ("website", &profile.website),
        ("about", &profile.description),
    ] {
        if !value.is_empty() {
            let _ = write!(text, "\n{label}: {value}");
        }
    }
    if let Some(avatar) = &profile.avatar {
        let _ = write!(text, "\npicture: media {avatar}");
    }
    match &info.hours {
        Some(hours) => {
            let _ = write!(text, "\nhours: {}", show_hours(hours));
        }
        None => text.push_str("\nhours: always open"),
    }
    if let Some(greeting) = &info.greeting {
        let _ = write!(text, "\ngreeting: {greeting}");
    }
    if let Some(away) = &info.away {
        let _ = write!(text, "\naway: {away}");
    }
    if let Some(role) = info.your_role {
        let _ = write!(text, "\nyou: {}", role_name(role));
    }
    if !info.staff.is_empty() {
        let staff = info
            .staff
            .iter()
            .map(|member| format!("{} ({})", member.user, role_name(member.role)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(text, "\nstaff: {staff}");
    }
    for reply in &info.quick_replies {
        let _ = write!(text, "\nquick reply {}: {}", reply.shortcut, reply.text);
    }
    text
}

fn show_stats(stats: &ShopStats) -> String {
    let ms = |value: Option<u64>| value.map_or("-".to_owned(), |ms| format!("{} s", ms / 1000));
    let mut text = format!(
        "{} conversations, {} awaiting a first answer; first response p50 {}, p90 {} ({} measured)",
        stats.conversations,
        stats.awaiting_response,
        ms(stats.first_response_p50_ms),
        ms(stats.first_response_p90_ms),
        stats.first_responses,
    );
    if !stats.orders.is_empty() {
        let orders = stats
            .orders
            .iter()
            .map(|(status, count)| format!("{status} {count}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(text, "\norders: {orders}");
    }
    for (agent, customers) in &stats.assignments {
        let _ = write!(text, "\n{agent}: {customers} customers");
    }
    text
}

/// `croissant  Croissant: 1.50 EUR, 12 available` (+ one line per variant).
fn show_product(view: &ProductView) -> String {
    let spec = &view.spec;
    let stock = |available: Option<&Option<u32>>| match available {
        Some(Some(units)) => format!("{units} available"),
        Some(None) | None => "in stock".to_owned(),
    };
    let inactive = if spec.active { "" } else { " (inactive)" };
    if spec.variants.is_empty() {
        let price = view.prices.first().copied().unwrap_or(spec.price);
        return format!(
            "{} {}: {}, {}{inactive}",
            spec.id,
            spec.title,
            show_price(price, spec.price),
            stock(view.available.first())
        );
    }
    let mut text = format!("{} {}{inactive}", spec.id, spec.title);
    for (index, variant) in spec.variants.iter().enumerate() {
        let list = variant.price.unwrap_or(spec.price);
        let price = view.prices.get(index).copied().unwrap_or(list);
        let _ = write!(
            text,
            "\n  {} {}: {}, {}",
            variant.id,
            variant.title,
            show_price(price, list),
            stock(view.available.get(index))
        );
    }
    text
}

/// `9.99 EUR (was 12.50 EUR)` when an offer applies, else the price.
fn show_price(now: Money, list: Money) -> String {
    if now == list {
        format_money(now)
    } else {
        format!("{} (was {})", format_money(now), format_money(list))
    }
}

fn show_offer(offer: &Offer) -> String {
    let target = match &offer.target {
        OfferTarget::All => "every product".to_owned(),
        OfferTarget::Catalog(catalog) => format!("catalog {catalog}"),
        OfferTarget::Category(category) => format!("category {category}"),
        OfferTarget::Product(product) => format!("product {product}"),
        OfferTarget::Variant(product, variant) => format!("product {product}/{variant}"),
    };
    let price = match offer.price {
        OfferPrice::Fixed(price) => format!("at {}", format_money(price)),
        OfferPrice::PercentOff { basis_points } => format!("{} off", format_percent(basis_points)),
    };
    format!(
        "{target} {price} from {} until {}",
        offer.starts_ms, offer.ends_ms
    )
}

/// `2 × Croissant at 1.50 EUR = 3.00 EUR`.
fn show_line(line: &LineView) -> String {
    format!(
        "{} × {} at {} = {}",
        line.quantity,
        line.title,
        format_money(line.unit_price),
        format_money(line.line_total)
    )
}

fn show_cart(cart: &CartView) -> String {
    let Some(subtotal) = cart.subtotal else {
        return "your cart is empty".to_owned();
    };
    let mut text = cart
        .lines
        .iter()
        .map(show_line)
        .collect::<Vec<_>>()
        .join("\n");
    let _ = write!(text, "\nsubtotal {}", format_money(subtotal));
    text
}

/// `order o-1 (alice) placed: 2 lines, total 4.50 EUR`.
fn order_summary(order: &OrderView) -> String {
    let lines = order.lines.len();
    format!(
        "order {} ({}) {}: {lines} line{}, total {}",
        order.order,
        order.customer,
        order.status,
        if lines == 1 { "" } else { "s" },
        format_money(order.total),
    )
}

fn show_order(order: &OrderView) -> String {
    let mut text = order_summary(order);
    for line in &order.lines {
        let _ = write!(text, "\n  {}", show_line(line));
    }
    if let Some(coupon) = &order.coupon {
        let _ = write!(
            text,
            "\n  subtotal {}, coupon {coupon} -{}",
            format_money(order.subtotal),
            format_money(order.discount)
        );
    }
    if order.status.is_unpaid() {
        let _ = write!(
            text,
            "\n  unpaid orders are released at {}",
            order.expires_ms
        );
    }
    if let Some(tracking) = &order.tracking {
        let _ = write!(text, "\n  tracking: {tracking}");
    }
    for payment in &order.payments {
        let _ = write!(text, "\n  {}", show_payment(payment));
    }
    text
}

/// `payment o-1#1: 4.50 EUR captured (captured 4.50 EUR)`.
fn show_payment(payment: &PaymentView) -> String {
    let mut text = format!(
        "payment {}: {} {}",
        payment.payment,
        format_money(payment.amount),
        payment_state_name(payment.state)
    );
    if payment.state == PaymentState::Scheduled {
        let _ = write!(text, ", due {}", payment.due_ms);
    }
    if payment.captured.minor() != 0 || payment.refunded.minor() != 0 {
        let _ = write!(text, " (captured {}", format_money(payment.captured));
        if payment.refunded.minor() != 0 {
            let _ = write!(text, ", refunded {}", format_money(payment.refunded));
        }
        text.push(')');
    }
    text
}

fn payment_state_name(state: PaymentState) -> &'static str {
    match state {
        PaymentState::Scheduled => "scheduled",
        PaymentState::Authorizing => "authorizing",
        PaymentState::Authorized => "authorized",
        PaymentState::Capturing => "capturing",
        PaymentState::Captured => "captured",
        PaymentState::Voiding => "voiding",
        PaymentState::Voided => "voided",
        PaymentState::Failed => "failed",
        PaymentState::Cancelled => "cancelled",
    }
}

fn show_coupon_spec(spec: &CouponSpec) -> String {
    let mut text = match spec.discount {
        Discount::Percent { basis_points } => format!("{} off", format_percent(basis_points)),
        Discount::Amount(amount) => format!("{} off", format_money(amount)),
    };
    let _ = write!(text, ", from {} until {}", spec.starts_ms, spec.ends_ms);
    if let Some(minimum) = spec.minimum {
        let _ = write!(text, ", orders from {}", format_money(minimum));
    }
    if let Some(total) = spec.total_max {
        let _ = write!(text, ", at most {total} uses");
    }
    if let Some(per_customer) = spec.per_customer_max {
        let _ = write!(text, ", at most {per_customer} per customer");
    }
    text
}

fn show_coupon(coupon: &CouponView) -> String {
    format!(
        "{}: {}; {} redeemed{}",
        coupon.spec.code,
        show_coupon_spec(&coupon.spec),
        coupon.redeemed,
        if coupon.enabled { "" } else { " (disabled)" }
    )
}

fn show_consent(consent: &ConsentView) -> String {
    format!(
        "{}: {} at {}",
        scope_name(consent.scope),
        if consent.granted {
            "granted"
        } else {
            "withdrawn"
        },
        consent.at_ms
    )
}

fn show_report(report: &PromotionReport) -> String {
    format!(
        "delivered to {} of {} (over quota {}, skipped {})",
        report.delivered, report.audience, report.over_quota, report.skipped
    )
}

fn show_card(card: &ProductCard) -> String {
    format!(
        "{} {} ({})",
        card.product,
        card.title,
        format_money(card.price)
    )
}

/// A commerce message as one line of history or `listen`.
pub(crate) fn describe_commerce(body: &CommerceBody) -> String {
    match body {
        CommerceBody::Product { product, .. } => format!("[product] {}", show_card(product)),
        CommerceBody::ProductList {
            header, sections, ..
        } => {
            let mut text = format!("[products] {header}");
            for (title, cards) in sections {
                let cards = cards.iter().map(show_card).collect::<Vec<_>>().join(", ");
                let _ = write!(text, "; {title}: {cards}");
            }
            text
        }
        CommerceBody::AskAbout { product, text, .. } => {
            format!("[about {}] {text}", show_card(product))
        }
        CommerceBody::Order(order) => format!("[{}]", order_summary(order)),
        CommerceBody::Promotion {
            scope,
            text,
            product,
            ..
        } => match product {
            Some(product) => format!("[{}] {text} — {}", scope_name(*scope), show_card(product)),
            None => format!("[{}] {text}", scope_name(*scope)),
        },
    }
}

/// An order update entry as one line: `order o-1 [4] is now paid, total 4.50 EUR`.
pub(crate) fn describe_order_update(target: Seq, order: &OrderView) -> String {
    format!(
        "order {} [{target}] is now {}, total {}",
        order.order,
        order.status,
        format_money(order.total)
    )
}

#[cfg(test)]
mod tests;
