//! A local HTTP sink standing in for a Session webhook: records every body it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};

#[derive(Clone, Default)]
pub struct Sink {
    pub bodies: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    /// Starts the sink on 127.0.0.1:0 (inside an actix System) and returns its URL.
    pub fn start(&self) -> String {
        let bodies = self.bodies.clone();
        let server = HttpServer::new(move || {
            let bodies = bodies.clone();
            App::new().default_service(web::to(move |body: web::Bytes| {
                let bodies = bodies.clone();
                async move {
                    bodies.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                    HttpResponse::Ok().finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let addr: SocketAddr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        format!("http://{addr}/hook")
    }

    pub fn all(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits (bounded) until a body satisfies `pred`; returns all bodies seen.
    pub async fn wait_for(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        for _ in 0..500 {
            if self.all().iter().any(|b| pred(b)) {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        self.all()
    }
}

/// A listener that accepts connections and never answers.
pub fn black_hole() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    format!("http://{addr}/hook")
}
