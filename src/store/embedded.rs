//! Embedded store (SQLite). Placeholder: implemented in its own change.
use std::path::Path;

use super::StoreResult;

pub struct EmbeddedStore;

impl EmbeddedStore {
    pub async fn open(_path: &Path) -> StoreResult<EmbeddedStore> {
        Err(super::StoreError::Misconfigured(
            "embedded store not built yet".into(),
        ))
    }
}

fn unbuilt<T>() -> StoreResult<T> {
    Err(super::StoreError::Misconfigured("not built yet".into()))
}

#[async_trait::async_trait]
impl super::Store for EmbeddedStore {
    async fn health(&self) -> StoreResult<super::StoreHealth> {
        unbuilt()
    }
    async fn secret(&self, _: &str, _: &[u8]) -> StoreResult<Vec<u8>> {
        unbuilt()
    }
    async fn create_merchant(&self, _: &super::MerchantBundle) -> StoreResult<()> {
        unbuilt()
    }
    async fn merchant(
        &self,
        _: &crate::domain::MerchantId,
    ) -> StoreResult<Option<crate::domain::Merchant>> {
        unbuilt()
    }
    async fn list_merchants(
        &self,
        _: Option<&crate::domain::MerchantId>,
        _: usize,
    ) -> StoreResult<Vec<crate::domain::Merchant>> {
        unbuilt()
    }
    async fn merchant_by_api_key(&self, _: &str) -> StoreResult<Option<crate::domain::Merchant>> {
        unbuilt()
    }
    async fn rotate_api_key(
        &self,
        _: &crate::domain::MerchantId,
        _: &crate::domain::ApiKeyRecord,
    ) -> StoreResult<()> {
        unbuilt()
    }
    async fn insert_plate(&self, _: &crate::domain::Plate) -> StoreResult<()> {
        unbuilt()
    }
    async fn plate(&self, _: &crate::domain::PlateId) -> StoreResult<Option<crate::domain::Plate>> {
        unbuilt()
    }
    async fn plates_of(
        &self,
        _: &crate::domain::MerchantId,
    ) -> StoreResult<Vec<crate::domain::Plate>> {
        unbuilt()
    }
    async fn idem_begin(
        &self,
        _: &super::IdemScope,
        _: &str,
        _: &[u8; 32],
        _: super::IdemClock,
    ) -> StoreResult<super::IdemBegin> {
        unbuilt()
    }
    async fn idem_finish(
        &self,
        _: &super::IdemScope,
        _: &str,
        _: &super::LeaseToken,
        _: &super::StoredResponse,
    ) -> StoreResult<bool> {
        unbuilt()
    }
    async fn idem_release(
        &self,
        _: &super::IdemScope,
        _: &str,
        _: &super::LeaseToken,
    ) -> StoreResult<bool> {
        unbuilt()
    }
}
