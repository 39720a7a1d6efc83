//! The compact in-memory form of one output line; strings are produced only when rendering.

use crate::vocab::{
    Category, MalformedKind, OrderChannel, RefundReason, SignupSource, SupportChannel,
};

/// The most lines an order can have; keeps [`OrderBody`] a fixed size.
pub(crate) const MAX_ITEMS: usize = 4;

/// One order line: `quantity` × SKU `sku` of `category` at `unit_price` minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) unit_price: u32,
    pub(crate) sku: u16,
    pub(crate) category: Category,
    pub(crate) quantity: u8,
}

impl Item {
    pub(crate) fn value(&self) -> u64 {
        u64::from(self.unit_price) * u64::from(self.quantity)
    }
}

/// An order; the total is derived as Σ quantity × unit_price − discount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OrderBody {
    pub(crate) discount: u32,
    pub(crate) cost: u32,
    pub(crate) order_no: u16,
    pub(crate) channel: OrderChannel,
    pub(crate) len: u8,
    pub(crate) items: [Item; MAX_ITEMS],
}

impl OrderBody {
    pub(crate) fn items(&self) -> &[Item] {
        &self.items[..usize::from(self.len)]
    }

    pub(crate) fn subtotal(&self) -> u64 {
        self.items().iter().map(Item::value).sum()
    }

    pub(crate) fn total(&self) -> u64 {
        self.subtotal() - u64::from(self.discount)
    }
}

/// The payload of an event, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    Order(OrderBody),
    Refund {
        order_no: u16,
        amount: u32,
        reason: RefundReason,
    },
    Support {
        channel: SupportChannel,
        minutes: u16,
    },
    Signup {
        source: SignupSource,
    },
    Retention {
        campaign: u8,
    },
}

/// What kind of line a record renders to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Line {
    Event = 0,
    Malformed = 1,
    Duplicate = 2,
}

/// One output line. `emitted` orders the stream; `occurred = emitted - delay`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    /// Seconds since the start of the period at which the line is emitted.
    pub(crate) emitted: u32,
    pub(crate) customer: u32,
    /// The customer's event number (1-based), part of the event id.
    pub(crate) seq: u32,
    pub(crate) line: Line,
    /// For malformed lines, the [`MalformedKind`] index in the low 4 bits and a variant above.
    pub(crate) malformed: u8,
    /// Seconds between `occurred_at` and emission (non-zero only for duplicates).
    pub(crate) delay: u16,
    pub(crate) body: Body,
}

impl Record {
    pub(crate) fn occurred(&self) -> u32 {
        self.emitted - u32::from(self.delay)
    }

    /// The total order of the output stream; unique per record.
    pub(crate) fn sort_key(&self) -> u128 {
        (u128::from(self.emitted) << 96)
            | (u128::from(self.customer) << 64)
            | (u128::from(self.seq) << 32)
            | u128::from(self.line as u8)
    }

    pub(crate) fn malformed_kind(&self) -> Option<(MalformedKind, u8)> {
        (self.line == Line::Malformed).then(|| {
            (
                MalformedKind::from_index(usize::from(self.malformed & 0x0f)),
                self.malformed >> 4,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_stays_within_64_bytes() {
        assert!(
            std::mem::size_of::<Record>() <= 64,
            "{}",
            std::mem::size_of::<Record>()
        );
    }
}
