//! Who issues a command, and what each of them may do.
//!
//! The core trusts the [`Actor`] it is given: the shop actor authenticates the user (the session
//! did) and looks up their staff role in the shop's staff list before calling in. The core then
//! decides what that actor may do with the data it owns (orders here; the shop actor checks
//! [`Actor::require`] before catalog, coupon and promotion changes).

use std::fmt;

use piazza_protocol::UserId;

use super::error::Error;
pub(crate) use piazza_protocol::commerce::StaffRole;

/// Who issues a command.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Actor {
    /// A customer of the shop.
    Customer(UserId),
    /// A member of the shop's staff.
    Staff {
        /// The staff member.
        user: UserId,
        /// Their role.
        role: StaffRole,
    },
    /// The node itself: timers (expiry, instalments, auto-completion) and integrations (a
    /// carrier reporting delivery).
    System,
}

/// Shop-wide actions gated by role (order commands have their own, finer table in
/// [`super::order`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Permission {
    /// Edit catalogs, categories, products, offers and stock.
    ManageCatalog,
    /// Create, change and disable coupons.
    ManageCoupons,
    /// Create and send promotions, change the quota.
    SendPromotions,
    /// Label customers.
    LabelCustomers,
}

impl Actor {
    /// Whether this is a staff member with one of `roles`.
    pub(crate) fn is_staff_in(&self, roles: &[StaffRole]) -> bool {
        matches!(self, Actor::Staff { role, .. } if roles.contains(role))
    }

    /// Whether this is any staff member.
    pub(crate) fn is_staff(&self) -> bool {
        matches!(self, Actor::Staff { .. })
    }

    /// Refuses an action this actor may not take: catalog, coupons and promotions are for the
    /// owner and managers; any staff member may label customers.
    pub(crate) fn require(&self, permission: Permission) -> Result<(), Error> {
        let (allowed, action) = match permission {
            Permission::ManageCatalog => (
                self.is_staff_in(&[StaffRole::Owner, StaffRole::Manager]),
                "manage the catalog",
            ),
            Permission::ManageCoupons => (
                self.is_staff_in(&[StaffRole::Owner, StaffRole::Manager]),
                "manage coupons",
            ),
            Permission::SendPromotions => (
                self.is_staff_in(&[StaffRole::Owner, StaffRole::Manager]),
                "send promotions",
            ),
            Permission::LabelCustomers => (self.is_staff(), "label customers"),
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::Forbidden { action })
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Customer(user) => write!(f, "customer {user}"),
            Actor::Staff { user, role } => write!(f, "{role:?} {user}"),
            Actor::System => f.write_str("system"),
        }
    }
}
