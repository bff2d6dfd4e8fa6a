//! The sites of the modelled mesh and the round trips between them.
//!
//! The default sites are observatories that publish or consume VOEvents
//! today. The round trip between two sites is computed from their
//! great-circle distance: light in fibre covers about 200 km per ms, and
//! real routes are longer than the great circle (cables follow coasts and
//! land at a few hubs); measured internet paths between continents run at
//! 1.5–2× the geodesic, so the model uses [`ROUTE_FACTOR`] = 1.6, plus
//! [`HOP_OVERHEAD_MS`] for the last miles and routers. Chile–Hawaii comes
//! out at 174 ms, Hawaii–South Africa at 301 ms and Canary Islands–Australia
//! at 304 ms, the worst pairs.

use serde::Deserialize;

/// Kilometres light travels in fibre per millisecond (refractive index ~1.5).
pub const FIBRE_KM_PER_MS: f64 = 200.0;
/// Real route length over great-circle distance.
pub const ROUTE_FACTOR: f64 = 1.6;
/// Fixed round-trip cost of access links and routers.
pub const HOP_OVERHEAD_MS: f64 = 4.0;
const EARTH_RADIUS_KM: f64 = 6371.0;

/// An observatory or data centre running one vomesh node.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
}

/// The default sites, in the order scenarios take them (the first N).
pub fn default_sites() -> Vec<Site> {
    [
        ("chile", -30.24, -70.74),         // Cerro Pachón (Rubin, Gemini South)
        ("hawaii", 19.82, -155.47),        // Maunakea
        ("canary-islands", 28.76, -17.89), // La Palma, Roque de los Muchachos
        ("south-africa", -32.38, 20.81),   // Sutherland (SALT)
        ("australia", -31.27, 149.06),     // Siding Spring
        ("california", 33.36, -116.86),    // Palomar (ZTF)
        ("germany", 48.26, 11.67),         // Garching (ESO headquarters)
    ]
    .into_iter()
    .map(|(name, latitude_deg, longitude_deg)| Site {
        name: name.to_owned(),
        latitude_deg,
        longitude_deg,
    })
    .collect()
}

/// Great-circle distance (haversine).
pub fn distance_km(a: &Site, b: &Site) -> f64 {
    let (la1, la2) = (a.latitude_deg.to_radians(), b.latitude_deg.to_radians());
    let dla = la2 - la1;
    let dlo = (b.longitude_deg - a.longitude_deg).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Modelled round-trip time between two sites.
pub fn rtt_ms(a: &Site, b: &Site) -> f64 {
    if a == b {
        return 0.0;
    }
    2.0 * distance_km(a, b) * ROUTE_FACTOR / FIBRE_KM_PER_MS + HOP_OVERHEAD_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str) -> Site {
        default_sites()
            .into_iter()
            .find(|s| s.name == name)
            .expect("a default site")
    }

    #[test]
    fn chile_to_hawaii_distance_matches_the_atlas() {
        // Cerro Pachón to Maunakea is about 10 400 km.
        let d = distance_km(&site("chile"), &site("hawaii"));
        assert!((10_000.0..10_800.0).contains(&d), "{d}");
    }

    #[test]
    fn round_trips_are_symmetric_and_intercontinental() {
        let sites = default_sites();
        for a in &sites {
            for b in &sites {
                assert_eq!(rtt_ms(a, b), rtt_ms(b, a));
                if a != b {
                    assert!(
                        (20.0..350.0).contains(&rtt_ms(a, b)),
                        "{} {}",
                        a.name,
                        b.name
                    );
                }
            }
        }
    }
}
