//! `sesame-adapters`: everything that speaks to wallets, and nothing that speaks HTTP
//! to merchants or touches the store.
//!
//! Owns: the [`contract::WalletAdapter`] contract and its neutral types, the
//! [`money`] types, the shared [`crypto`], and the [`brands`] registry that maps a
//! wallet brand to an adapter and detects it from a User-Agent or a payment code.
//! Must never: depend on the gateway crate (the dependency points one way only).

pub mod alipay;
pub mod alipay_plus;
pub mod brands;
pub mod contract;
pub mod crypto;
pub mod kakao_pay;
pub mod money;
pub mod sandbox;
pub mod wechat_pay;
