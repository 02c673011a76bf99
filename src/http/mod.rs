//! HTTP edge: routes, extractors, middleware. Holds HTTP only; every decision is made
//! in `services`. The whole URL tree is in `configure` below.

pub mod admin;
pub mod extract;
pub mod idempotent;
pub mod merchant;
pub mod middleware;
pub mod ops;
pub mod order_qr;
pub mod orders;
pub mod plates;
pub mod request_id;
pub mod returns;
pub mod shopper;
pub mod webhooks;

use actix_web::{HttpRequest, HttpResponse, guard, web};

use crate::error::{ApiError, ErrorCode};

/// The URL tree. Each API resource answers a wrong method with a JSON 405; the
/// shopper's addresses (`/q`, `/o`, `/static`, `/demo`) answer HTML and also HEAD.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(ops::healthz)))
        .service(resource("/readyz").route(web::get().to(ops::readyz)))
        .service(resource("/metrics").route(web::get().to(ops::metrics)))
        .service(
            resource("/v1/merchants")
                .route(web::post().to(admin::create_merchant))
                .route(web::get().to(admin::list_merchants)),
        )
        .service(resource("/v1/merchants/{id}").route(web::get().to(admin::get_merchant)))
        .service(
            resource("/v1/merchants/{id}/plates")
                .route(web::post().to(admin::create_plate))
                .route(web::get().to(admin::list_plates)),
        )
        .service(
            resource("/v1/merchants/{id}/api-keys").route(web::post().to(admin::rotate_api_key)),
        )
        .service(resource("/v1/qr").route(web::get().to(merchant::list_plates)))
        .service(resource("/v1/plates/{id}/qr.png").route(web::get().to(plates::png)))
        .service(resource("/v1/plates/{id}/qr.svg").route(web::get().to(plates::svg)))
        .service(resource("/v1/plates/{id}/poster.svg").route(web::get().to(plates::poster)))
        .service(
            resource("/v1/orders")
                .route(web::post().to(orders::create_order))
                .route(web::get().to(orders::list_orders)),
        )
        .service(resource("/v1/orders/{id}").route(web::get().to(orders::get_order)))
        .service(resource("/v1/orders/{id}/qr.png").route(web::get().to(order_qr::png)))
        .service(resource("/v1/orders/{id}/qr.svg").route(web::get().to(order_qr::svg)))
        .service(resource("/v1/orders/{id}/close").route(web::post().to(orders::close_order)))
        .service(
            resource("/v1/orders/{id}/refunds")
                .route(web::post().to(orders::create_refund))
                .route(web::get().to(orders::list_refunds)),
        )
        .service(resource("/v1/balances").route(web::get().to(orders::balances)))
        .service(resource("/v1/events").route(web::get().to(orders::list_events)))
        .service(resource("/v1/events/{id}").route(web::get().to(orders::get_event)))
        .service(resource("/v1/events/{id}/resend").route(web::post().to(orders::resend_event)))
        .service(resource("/webhooks/{adapter}").route(web::post().to(webhooks::wallet_callback)))
        .service(resource("/return/{adapter}/{order}").route(web::get().to(returns::wallet_return)))
        .service(
            web::scope("/q")
                .default_service(web::to(shopper::not_found_page))
                .service(page("/{token}").route(read().to(shopper::plate_page)))
                .service(
                    page("/{token}/pay")
                        .route(web::post().to(shopper::pay))
                        .route(read().to(shopper::to_form_page)),
                )
                .service(page("/{token}/wechat").route(read().to(shopper::wechat_return_plate))),
        )
        .service(
            web::scope("/o")
                .default_service(web::to(shopper::not_found_page))
                .service(page("/{id}").route(read().to(shopper::order_page)))
                .service(page("/{id}/status").route(read().to(shopper::status_json)))
                .service(
                    page("/{id}/pay")
                        .route(web::post().to(shopper::order_pay))
                        .route(read().to(shopper::to_form_page)),
                )
                .service(page("/{id}/wallet").route(read().to(shopper::open_wallet)))
                .service(page("/{id}/wechat").route(read().to(shopper::wechat_return)))
                .service(
                    page("/{id}/cancel")
                        .route(web::post().to(shopper::cancel))
                        .route(read().to(shopper::to_form_page)),
                ),
        )
        .service(
            web::scope("/static")
                .default_service(web::to(shopper::not_found_page))
                .service(page("/sesame.css").route(read().to(shopper::css)))
                .service(page("/status.js").route(read().to(shopper::status_js)))
                .service(page("/wechat.js").route(read().to(shopper::wechat_js))),
        )
        .service(page("/demo/poster.svg").route(read().to(shopper::demo_poster)));
}

/// A shopper address: a wrong method gets an HTML 405.
fn page(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(shopper::method_not_allowed_page))
}

/// GET, and HEAD (answered like GET, without the body).
fn read() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ErrorCode::MethodNotAllowed))
}

/// Unknown paths: a JSON 404 from the code table.
pub async fn not_found(_req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ErrorCode::NotFound))
}
