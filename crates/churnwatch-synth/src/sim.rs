//! The simulation of one customer: archetype, profile, and the story of its events.
//!
//! Every customer runs on its own ChaCha8 stream keyed by (seed, customer index), so its history
//! never depends on how many other customers there are. Time is in days since the start of the
//! period while simulating and in whole seconds once an event is recorded.

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Exp1, Gamma};

use crate::config::{BgNbdProcess, Process};

use crate::record::{Body, Item, MAX_ITEMS, OrderBody};
use crate::truth::CampaignEffect;
use crate::vocab::{
    ARCHETYPE_SHARES, AT_RISK_DELAY_DAYS, AT_RISK_TARGET_PROBABILITY, Archetype,
    CAMPAIGN_RESUME_DELAY_DAYS, CAMPAIGNS, CURRENCY_SHARES, Category, Currency,
    MISSING_SIGNUP_PROBABILITY, OrderChannel, RefundReason, SKUS_PER_CATEGORY, SignupSource,
    SupportChannel, TARGET_SILENCE_GAPS,
};

/// The stream of a customer's story (archetype, orders, ...).
pub(crate) const STORY_STREAM: u64 = 0;
/// The stream of a customer's noise (malformed lines, duplicates), so that noise settings never
/// change the story.
pub(crate) const NOISE_STREAM: u64 = 1;

const SECS_PER_DAY: f64 = 86_400.0;

/// Returns the random stream `stream` of customer `customer` under `seed`.
pub(crate) fn customer_rng(seed: u64, customer: u32, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&u64::from(customer).to_le_bytes());
    key[16..].copy_from_slice(b"churnwatch-synth");
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// An event of the customer's story before it gets its sequence number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Draft {
    pub(crate) t: u32,
    pub(crate) body: Body,
}

/// What really happened to one customer, in seconds since the start of the period.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Story {
    pub(crate) archetype: Archetype,
    pub(crate) currency: Currency,
    pub(crate) signup: Option<u32>,
    pub(crate) churned: Option<u32>,
    pub(crate) reactivated: Option<u32>,
    pub(crate) dropped: Option<(Category, u32)>,
    pub(crate) campaign: Option<(u8, u32, CampaignEffect)>,
    /// Orders per day while active (see `TruthRecord::order_rate_per_day`).
    pub(crate) rate_per_day: Option<f64>,
}

/// Simulates customer `customer` over a period of `period_secs` seconds, appending its events in
/// time order to `drafts` (which is cleared first) and returning its truth.
pub(crate) fn simulate(
    seed: u64,
    customer: u32,
    period_secs: u32,
    process: Process,
    drafts: &mut Vec<Draft>,
) -> Story {
    drafts.clear();
    let mut rng = customer_rng(seed, customer, STORY_STREAM);
    let archetype = match process {
        Process::Archetypes => {
            ARCHETYPE_SHARES[pick(&mut rng, &ARCHETYPE_SHARES.map(|(_, w)| w))].0
        }
        Process::BgNbd(_) => Archetype::BgNbd,
    };
    let currency = CURRENCY_SHARES[pick(&mut rng, &CURRENCY_SHARES.map(|(_, w)| w))].0;
    let source = SignupSource::from_index(pick(&mut rng, &source_weights(archetype)));
    let missing_signup =
        rng.random_bool(MISSING_SIGNUP_PROBABILITY) && archetype != Archetype::Prospect;
    let end = f64::from(period_secs) / SECS_PER_DAY;
    let signup_day = acquisition_day(&mut rng, archetype, end);
    let first_order_day = signup_day + 300.0 / SECS_PER_DAY + 3.0 * rng.sample::<f64, _>(Exp1);
    let mut sim = Sim::new(rng, archetype, currency, end, drafts);

    let mut story = Story {
        archetype,
        currency,
        signup: None,
        churned: None,
        reactivated: None,
        dropped: None,
        campaign: None,
        rate_per_day: None,
    };
    if !missing_signup {
        story.signup = sim.push(signup_day, Body::Signup { source });
    }
    match process {
        Process::Archetypes => sim.play(first_order_day, &mut story),
        Process::BgNbd(p) => sim.play_bgnbd(first_order_day, p, &mut story),
    }
    sim.drafts.sort_by_key(|d| d.t);
    story
}

/// Returns how acquisition sources are weighted for an archetype (search, social, referral,
/// email, affiliate): referrals lean towards regulars and affiliates towards unprofitable and
/// one-time buyers, so "where do the best customers come from" has a true answer.
fn source_weights(archetype: Archetype) -> [f64; 5] {
    match archetype {
        Archetype::Regular => [0.30, 0.15, 0.30, 0.15, 0.10],
        Archetype::Unprofitable => [0.15, 0.25, 0.05, 0.05, 0.50],
        Archetype::OneTime => [0.25, 0.30, 0.05, 0.10, 0.30],
        Archetype::Prospect => [0.30, 0.30, 0.10, 0.10, 0.20],
        _ => [0.30, 0.20, 0.15, 0.15, 0.20],
    }
}

/// Returns the signup day. Churn stories need room to unfold, so their customers join in the
/// first 60% of the period (a churn can then fall shortly before any cut-off, where only the
/// signals can tell it); unprofitable customers in the first 70%; everyone else joins in the
/// first 15% (the existing base) or anywhere in the period, half and half.
fn acquisition_day(rng: &mut ChaCha8Rng, archetype: Archetype, end: f64) -> f64 {
    let early: f64 = rng.random();
    let u: f64 = rng.random();
    let horizon = match archetype {
        Archetype::Decliner
        | Archetype::CategoryDropper
        | Archetype::SilentChurner
        | Archetype::Reactivator => 0.60,
        Archetype::Unprofitable => 0.70,
        // Cohorts over the first 60%, so every customer has a history to judge.
        Archetype::BgNbd => 0.60,
        _ if early < 0.5 => 0.15,
        _ => 1.0,
    };
    u * horizon * end
}

/// Returns an index drawn with the given (unnormalised) weights.
fn pick(rng: &mut impl Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

fn uniform(rng: &mut impl Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// How one order deviates from the customer's usual basket.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// 1 for a normal order; below 1 the basket shrinks and gets cheaper (a declining customer).
    scale: f64,
    /// A category the order must contain.
    require: Option<Category>,
    /// A category the order must not contain.
    exclude: Option<Category>,
    /// The order goes wrong: refunds and support contacts follow it far more often (a churner
    /// whose service failed before it left, so refunds and contacts carry signal).
    troubled: bool,
}

const NORMAL: Shape = Shape {
    scale: 1.0,
    require: None,
    exclude: None,
    troubled: false,
};

/// Share of silent churners and of decliners whose last weeks go wrong (refunds, contacts).
const TROUBLED_CHURNER_SHARE: f64 = 0.5;
/// How many of the customer's usual gaps before its churn the trouble starts.
const TROUBLE_GAPS: f64 = 2.5;
/// Largest seasonal swing of a customer's order rate (the rate is multiplied by 1 ± this at
/// the peak and the trough of the year).
const MAX_SEASONALITY: f64 = 0.5;
/// Day of the period (its first day is 0) on which buying peaks every year.
const SEASON_PEAK_DAY: f64 = 330.0;
/// The range of the shape of a customer's Gamma-distributed gaps between orders: some buy
/// like clockwork, others irregularly, so a silence means more for some than for others.
const REGULARITY: (f64, f64) = (1.5, 8.0);

/// A usual basket line: index into the preferred categories, SKU and quantity.
#[derive(Debug, Clone, Copy)]
struct Usual {
    pref: usize,
    sku: u16,
    quantity: u8,
}

struct Sim<'a> {
    rng: ChaCha8Rng,
    end: f64,
    currency: Currency,
    unprofitable: bool,
    drafts: &'a mut Vec<Draft>,
    orders: u16,
    /// Preferred categories (1–5); a category dropper's dropped category is the first.
    prefs: Vec<Category>,
    /// Three favourite SKUs per preferred category.
    favorites: Vec<[u16; 3]>,
    usual: Vec<Usual>,
    channel: OrderChannel,
    /// The customer's usual days between orders.
    gap: f64,
    /// The customer's seasonal swing of its order rate, 0 (none) to [`MAX_SEASONALITY`].
    season: f64,
    /// How regular the customer's gaps are: the shape of their Gamma distribution, from
    /// [`REGULARITY`] (1 would be a Poisson process; 8, a gap within about ±35% of the usual).
    regularity: Gamma<f64>,
}

impl<'a> Sim<'a> {
    fn new(
        mut rng: ChaCha8Rng,
        archetype: Archetype,
        currency: Currency,
        end: f64,
        drafts: &'a mut Vec<Draft>,
    ) -> Self {
        let min_prefs = if archetype == Archetype::CategoryDropper {
            2
        } else {
            1
        };
        let n_prefs = rng.random_range(min_prefs..=5usize);
        let mut prefs: Vec<Category> = Vec::with_capacity(n_prefs);
        while prefs.len() < n_prefs {
            let c = Category::from_index(rng.random_range(0..Category::ALL.len()));
            if !prefs.contains(&c) {
                prefs.push(c);
            }
        }
        let favorites: Vec<[u16; 3]> = prefs
            .iter()
            .map(|_| [(); 3].map(|()| rng.random_range(0..SKUS_PER_CATEGORY)))
            .collect();
        let n_usual = rng.random_range(1..=3usize).max(min_prefs);
        let mut usual = Vec::with_capacity(n_usual);
        for i in 0..n_usual {
            // A dropper's usual basket holds the dropped category and at least one other.
            let pref = if i < min_prefs {
                i
            } else {
                rng.random_range(0..prefs.len())
            };
            usual.push(Usual {
                pref,
                sku: favorites[pref][rng.random_range(0..3)],
                quantity: if rng.random_bool(0.7) {
                    1
                } else {
                    rng.random_range(2..=3)
                },
            });
        }
        let channel = OrderChannel::from_index(pick(&mut rng, &[0.55, 0.35, 0.10]));
        let gap = match archetype {
            Archetype::CategoryDropper => uniform(&mut rng, (10.0, 28.0)),
            Archetype::SilentChurner | Archetype::Reactivator => uniform(&mut rng, (10.0, 35.0)),
            Archetype::Decliner => uniform(&mut rng, (14.0, 35.0)),
            Archetype::Unprofitable => uniform(&mut rng, (14.0, 45.0)),
            _ => uniform(&mut rng, (14.0, 42.0)),
        };
        // A seasonal swing for the archetypes that buy on a cadence (the BG/NBD process stays
        // stationary: its oracle assumes constant rates).
        let season = match archetype {
            Archetype::BgNbd | Archetype::Prospect | Archetype::OneTime => 0.0,
            _ => uniform(&mut rng, (0.0, MAX_SEASONALITY)),
        };
        let shape = uniform(&mut rng, REGULARITY);
        let regularity = Gamma::new(shape, 1.0 / shape).expect("a positive shape");
        Sim {
            rng,
            end,
            currency,
            unprofitable: archetype == Archetype::Unprofitable,
            drafts,
            orders: 0,
            prefs,
            favorites,
            usual,
            channel,
            gap,
            season,
            regularity,
        }
    }

    /// Plays the archetype's story from the first order on, filling in `story`.
    fn play(&mut self, first: f64, story: &mut Story) {
        let end = self.end;
        let window = (end - first).max(0.0);
        story.rate_per_day = match story.archetype {
            Archetype::Prospect | Archetype::BgNbd => None,
            Archetype::OneTime => Some(0.0),
            _ => Some(1.0 / self.gap),
        };
        match story.archetype {
            // BG/NBD customers are played by `play_bgnbd`.
            Archetype::Prospect | Archetype::BgNbd => {}
            Archetype::OneTime => {
                self.order(first, NORMAL);
                self.silence_campaign(story);
            }
            Archetype::Regular | Archetype::Unprofitable => {
                self.orders_until(first, end, NORMAL);
                self.silence_campaign(story);
            }
            Archetype::SilentChurner => {
                let churn = first + window * uniform(&mut self.rng, (0.40, 0.85));
                let trouble = self.trouble_from(churn);
                let mut day = first;
                let mut last = None;
                while day < churn.min(end) {
                    let shape = Shape {
                        troubled: day >= trouble,
                        ..NORMAL
                    };
                    last = self.order(day, shape).map(|t| (day, t)).or(last);
                    day += self.next_gap(day, self.gap);
                }
                self.churn(story, last, None, NORMAL);
            }
            Archetype::Decliner => {
                let churn = first + window * uniform(&mut self.rng, (0.50, 0.85));
                let decline = first + (churn - first) * uniform(&mut self.rng, (0.40, 0.60));
                let trouble = self.trouble_from(churn);
                let mut day = first;
                let mut last = None;
                while day < churn {
                    let progress = ((day - decline) / (churn - decline)).clamp(0.0, 1.0);
                    let shape = Shape {
                        scale: 1.0 - 0.7 * progress,
                        troubled: day >= trouble,
                        ..NORMAL
                    };
                    last = self.order(day, shape).map(|t| (day, t)).or(last);
                    day += self.next_gap(day, self.gap * (1.0 + 1.5 * progress));
                }
                self.churn(
                    story,
                    last,
                    None,
                    Shape {
                        scale: 0.8,
                        ..NORMAL
                    },
                );
            }
            Archetype::Reactivator => {
                let churn = first + window * uniform(&mut self.rng, (0.25, 0.45));
                let silence = uniform(&mut self.rng, (90.0, 200.0));
                let last = self.orders_until(first, churn, NORMAL);
                let comeback = last.map(|(day, _)| day + silence);
                self.churn(story, last, comeback, NORMAL);
                if let Some(day) = comeback
                    && let Some((_, t)) = self.orders_from(day, end, NORMAL)
                {
                    story.reactivated = Some(t);
                }
            }
            Archetype::CategoryDropper => {
                let dropped = self.prefs[0];
                let drop = first + window * uniform(&mut self.rng, (0.35, 0.70));
                let with = Shape {
                    require: Some(dropped),
                    ..NORMAL
                };
                let last = self.orders_until(first, drop, with);
                let without = Shape {
                    exclude: Some(dropped),
                    ..NORMAL
                };
                if let Some((day, t)) = last {
                    let next = day + self.next_gap(day, self.gap);
                    if self.orders_from(next, end, without).is_some() {
                        story.dropped = Some((dropped, t));
                    }
                }
                self.silence_campaign(story);
            }
        }
    }

    /// Plays the BG/NBD story from the first order: Poisson purchases at rate λ, and after each
    /// repeat purchase a dropout with probability p. A dropout's `churned_at` is that purchase.
    fn play_bgnbd(&mut self, first: f64, params: BgNbdProcess, story: &mut Story) {
        // Parameters were validated with the configuration.
        let rates = Gamma::new(params.r, 1.0 / params.alpha).expect("valid BG/NBD r and alpha");
        let dropouts = Beta::new(params.a, params.b).expect("valid BG/NBD a and b");
        let per_week: f64 = rates.sample(&mut self.rng);
        let p: f64 = dropouts.sample(&mut self.rng);
        story.rate_per_day = Some(per_week / 7.0);
        if self.order(first, NORMAL).is_none() {
            return;
        }
        // A rate that underflowed to zero never buys again.
        if per_week <= 0.0 {
            return;
        }
        let mut day = first;
        loop {
            let gap_weeks = self.rng.sample::<f64, _>(Exp1) / per_week;
            day += 7.0 * gap_weeks;
            let Some(t) = self.order(day, NORMAL) else {
                break;
            };
            if self.rng.random_bool(p.clamp(0.0, 1.0)) {
                story.churned = Some(t);
                break;
            }
        }
    }

    /// Records a churner's churn at its last order, then maybe aims a campaign at it once it has
    /// been silent for a while; a campaign that works brings the customer back (`resume` shapes
    /// its orders). `comeback` is the day a reactivator returns on its own.
    fn churn(
        &mut self,
        story: &mut Story,
        last: Option<(f64, u32)>,
        comeback: Option<f64>,
        resume: Shape,
    ) {
        let Some((last_day, last_t)) = last else {
            return;
        };
        story.churned = Some(last_t);
        // Every draw is made whatever the outcome, so the stream stays aligned.
        let targeted = self.rng.random_bool(AT_RISK_TARGET_PROBABILITY);
        let delay = self.targeting_delay(true);
        let at = last_day + delay;
        let which = self.rng.random_range(0..CAMPAIGNS.len());
        let works = self.rng.random::<f64>() < CAMPAIGNS[which].resume_probability;
        let back = at + uniform(&mut self.rng, CAMPAIGN_RESUME_DELAY_DAYS);
        // The targeting rule sees silence, not churn: a long gap before the churn came first,
        // and the campaign reached the customer then, when it changed nothing.
        if let Some(from) = self.first_silence_longer_than(delay, None) {
            if targeted {
                self.target(story, from + delay, which as u8, CampaignEffect::None);
            }
            return;
        }
        // A campaign reaches a reactivator only while it is still silent.
        if !targeted || comeback.is_some_and(|c| at >= c) {
            return;
        }
        let effect = if works && comeback.is_none() {
            CampaignEffect::Resumed
        } else {
            CampaignEffect::None
        };
        if self.target(story, at, which as u8, effect)
            && effect == CampaignEffect::Resumed
            && let Some((_, t)) = self.orders_from(back, self.end, resume)
        {
            story.reactivated = Some(t);
        }
    }

    /// The targeting rule for a customer who does not churn after repeat purchases (one-time
    /// buyers included): the first time its silence lasts [`AT_RISK_DELAY_DAYS`] (drawn per
    /// customer), a campaign reaches it with probability [`AT_RISK_TARGET_PROBABILITY`], exactly
    /// as it reaches a churner. It changes nothing: a buyer in a long gap orders again on its own
    /// schedule, and a win-back brings back lapsed repeat customers only, not one-time buyers.
    fn silence_campaign(&mut self, story: &mut Story) {
        let targeted = self.rng.random_bool(AT_RISK_TARGET_PROBABILITY);
        let delay = self.targeting_delay(self.orders > 1);
        let which = self.rng.random_range(0..CAMPAIGNS.len()) as u8;
        if targeted && let Some(from) = self.first_silence_longer_than(delay, Some(self.end)) {
            self.target(story, from + delay, which, CampaignEffect::None);
        }
    }

    /// Returns the days of silence after which the targeting rule reaches the customer: a draw
    /// from [`AT_RISK_DELAY_DAYS`], and for a repeat customer at least [`TARGET_SILENCE_GAPS`]
    /// of its usual gaps (what a CRM sees of its cadence).
    fn targeting_delay(&mut self, repeat: bool) -> f64 {
        let days = uniform(&mut self.rng, AT_RISK_DELAY_DAYS);
        if repeat {
            days.max(TARGET_SILENCE_GAPS * self.gap)
        } else {
            days
        }
    }

    /// Returns the day of the order that starts the customer's first gap longer than `days`
    /// between its orders so far (and, with `until`, the silence from its last order to then).
    fn first_silence_longer_than(&self, days: f64, until: Option<f64>) -> Option<f64> {
        let orders: Vec<f64> = self
            .drafts
            .iter()
            .filter(|d| matches!(d.body, Body::Order(_)))
            .map(|d| f64::from(d.t) / SECS_PER_DAY)
            .collect();
        let last = orders.last().copied();
        orders
            .windows(2)
            .map(|w| (w[0], w[1]))
            .chain(last.zip(until))
            .find(|(a, b)| b - a > days)
            .map(|(a, _)| a)
    }

    /// Sends campaign `which` to the customer on `day`, with `effect`, if it lands early enough
    /// for a resumed order to fall inside the period; returns whether it was sent.
    fn target(&mut self, story: &mut Story, day: f64, which: u8, effect: CampaignEffect) -> bool {
        if day >= self.end - CAMPAIGN_RESUME_DELAY_DAYS.1 {
            return false;
        }
        let Some(t) = self.push(day, Body::Retention { campaign: which }) else {
            return false;
        };
        story.campaign = Some((which, t, effect));
        true
    }

    /// Places orders from `from` on at the usual cadence while before `until`; returns the day
    /// and time of the last one.
    fn orders_until(&mut self, from: f64, until: f64, shape: Shape) -> Option<(f64, u32)> {
        let mut day = from;
        let mut last = None;
        while day < until.min(self.end) {
            last = self.order(day, shape).map(|t| (day, t)).or(last);
            day += self.next_gap(day, self.gap);
        }
        last
    }

    /// Returns the day from which a churner's orders go wrong, drawn for every churner so the
    /// stream stays aligned: [`TROUBLE_GAPS`] usual gaps before its churn for a
    /// [`TROUBLED_CHURNER_SHARE`] of them, never for the others.
    fn trouble_from(&mut self, churn: f64) -> f64 {
        if self.rng.random_bool(TROUBLED_CHURNER_SHARE) {
            churn - TROUBLE_GAPS * self.gap
        } else {
            f64::INFINITY
        }
    }

    /// Places orders from `from` to the end of the period; returns the day and time of the first.
    fn orders_from(&mut self, from: f64, until: f64, shape: Shape) -> Option<(f64, u32)> {
        let first = self.secs(from).map(|t| (from, t));
        self.orders_until(from, until, shape);
        first
    }

    /// Returns the days from an order on `day` to the next: `base` shortened in the customer's
    /// season and lengthened out of it (the rate swings by `season` over the year, peaking on
    /// [`SEASON_PEAK_DAY`]), times a Gamma draw of mean 1 and the customer's regularity, at
    /// least a day.
    fn next_gap(&mut self, day: f64, base: f64) -> f64 {
        let jitter: f64 = self.regularity.sample(&mut self.rng);
        let phase = std::f64::consts::TAU * (day - SEASON_PEAK_DAY) / 365.25;
        let rate = 1.0 + self.season * phase.cos();
        (base / rate * jitter).max(1.0)
    }

    fn secs(&self, day: f64) -> Option<u32> {
        (day >= 0.0 && day < self.end).then_some((day * SECS_PER_DAY) as u32)
    }

    /// Records an event on `day` if it falls inside the period.
    fn push(&mut self, day: f64, body: Body) -> Option<u32> {
        let t = self.secs(day)?;
        self.drafts.push(Draft { t, body });
        Some(t)
    }

    fn price(&self, category: Category, sku: u16) -> u32 {
        self.currency.from_usd_cents(category.usd_price(sku))
    }

    fn item(&self, category: Category, sku: u16, quantity: u8) -> Item {
        Item {
            unit_price: self.price(category, sku),
            sku,
            category,
            quantity,
        }
    }

    /// Places one order on `day`, with the refunds and support contacts that follow it.
    fn order(&mut self, day: f64, shape: Shape) -> Option<u32> {
        let t = self.secs(day)?;
        let mut items: Vec<Item> = Vec::with_capacity(MAX_ITEMS);
        let scale = shape.scale;
        for i in 0..self.usual.len() {
            let Usual {
                pref,
                mut sku,
                mut quantity,
            } = self.usual[i];
            let category = self.prefs[pref];
            if shape.exclude == Some(category) {
                continue;
            }
            if !items.is_empty() && scale < 1.0 && !self.rng.random_bool(scale) {
                continue;
            }
            let r: f64 = self.rng.random();
            if r < 0.12 {
                sku = self.favorites[pref][self.rng.random_range(0..3)];
            } else if r < 0.18 {
                sku = self.rng.random_range(0..SKUS_PER_CATEGORY);
            }
            if scale < 1.0 && self.rng.random_bool(1.0 - scale) {
                sku = self.rng.random_range(0..=sku);
            }
            if self.rng.random_bool(0.2) {
                quantity = if self.rng.random_bool(0.5) {
                    quantity.saturating_sub(1)
                } else {
                    quantity + 1
                };
            }
            if scale < 1.0 {
                quantity = (f64::from(quantity) * scale + uniform(&mut self.rng, (-0.3, 0.3)))
                    .round() as u8;
            }
            add_line(&mut items, self.item(category, sku, quantity.clamp(1, 6)));
        }
        if self.rng.random_bool(0.10 * scale) {
            let category = Category::from_index(self.rng.random_range(0..Category::ALL.len()));
            let sku = self.rng.random_range(0..SKUS_PER_CATEGORY);
            if shape.exclude != Some(category) {
                add_line(&mut items, self.item(category, sku, 1));
            }
        }
        if let Some(required) = shape.require
            && !items.iter().any(|i| i.category == required)
        {
            let pref = self.prefs.iter().position(|c| *c == required).unwrap_or(0);
            let sku = self.favorites[pref][self.rng.random_range(0..3)];
            if items.len() == MAX_ITEMS {
                items.pop();
            }
            add_line(&mut items, self.item(required, sku, 1));
        }
        if items.is_empty() {
            let allowed: Vec<usize> = (0..self.prefs.len())
                .filter(|&p| shape.exclude != Some(self.prefs[p]))
                .collect();
            let pref = allowed[self.rng.random_range(0..allowed.len())];
            let sku = self.favorites[pref][self.rng.random_range(0..3)];
            add_line(&mut items, self.item(self.prefs[pref], sku, 1));
        }

        let subtotal: u64 = items.iter().map(Item::value).sum();
        let (discount, cost) = if self.unprofitable {
            // Heavy discounts sell below cost: the cost of goods exceeds what the customer pays.
            let discount = (subtotal as f64 * uniform(&mut self.rng, (0.35, 0.55))) as u64;
            let total = subtotal - discount;
            (
                discount,
                (total as f64 * uniform(&mut self.rng, (1.02, 1.25))) as u64 + 1,
            )
        } else {
            let discount = if self.rng.random_bool(0.12) {
                (subtotal as f64 * uniform(&mut self.rng, (0.05, 0.20))) as u64
            } else {
                0
            };
            (
                discount,
                (subtotal as f64 * uniform(&mut self.rng, (0.45, 0.70))) as u64,
            )
        };
        let channel = if self.rng.random_bool(0.85) {
            self.channel
        } else {
            OrderChannel::from_index(self.rng.random_range(0..OrderChannel::ALL.len()))
        };
        self.orders += 1;
        let mut body = OrderBody {
            discount: u32::try_from(discount).unwrap_or(u32::MAX),
            cost: u32::try_from(cost).unwrap_or(u32::MAX),
            order_no: self.orders,
            channel,
            len: items.len() as u8,
            items: [items[0]; MAX_ITEMS],
        };
        body.items[..items.len()].copy_from_slice(&items);
        self.drafts.push(Draft {
            t,
            body: Body::Order(body),
        });
        self.aftermath(day, &body, shape.troubled);
        Some(t)
    }

    /// Adds the refund and support contacts that follow an order, if any; a `troubled` order
    /// is often refunded and brings one to three contacts.
    fn aftermath(&mut self, day: f64, order: &OrderBody, troubled: bool) {
        let total = order.total();
        let (contacts, refund_probability) = if self.unprofitable {
            (self.rng.random_range(1..=4u32), 0.35)
        } else if troubled {
            (self.rng.random_range(1..=3u32), 0.6)
        } else {
            (u32::from(self.rng.random_bool(0.06)), 0.03)
        };
        for _ in 0..contacts {
            let at = day + uniform(&mut self.rng, (0.05, 14.0));
            let channel = SupportChannel::from_index(pick(&mut self.rng, &[0.3, 0.4, 0.3]));
            let minutes = if self.unprofitable {
                self.rng.random_range(5..=45)
            } else {
                self.rng.random_range(2..=30)
            };
            self.push(at, Body::Support { channel, minutes });
        }
        if total > 0 && self.rng.random_bool(refund_probability) {
            let at = day + uniform(&mut self.rng, (2.0, 20.0));
            let amount = if self.unprofitable {
                (total as f64 * uniform(&mut self.rng, (0.5, 1.0))) as u64
            } else if self.rng.random_bool(0.4) {
                total
            } else {
                order.items()[self.rng.random_range(0..order.items().len())].value()
            };
            let reason =
                RefundReason::from_index(self.rng.random_range(0..RefundReason::ALL.len()));
            let amount = u32::try_from(amount.clamp(1, total)).unwrap_or(u32::MAX);
            self.push(
                at,
                Body::Refund {
                    order_no: order.order_no,
                    amount,
                    reason,
                },
            );
        }
    }
}

/// Adds a line to an order, merging it into an existing line of the same SKU.
fn add_line(items: &mut Vec<Item>, item: Item) {
    if let Some(existing) = items
        .iter_mut()
        .find(|i| i.category == item.category && i.sku == item.sku)
    {
        existing.quantity = existing.quantity.saturating_add(item.quantity).min(9);
    } else if items.len() < MAX_ITEMS {
        items.push(item);
    }
}
