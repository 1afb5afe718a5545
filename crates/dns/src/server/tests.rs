//! Unit tests of the request path: rate limiting with injected time, garbage dropped.

use super::*;

#[test]
fn rrl_allows_a_burst_then_the_rate_and_slips_every_second_limited_answer() {
    let mut rrl = Rrl::new(RrlConfig { responses_per_second: 10, burst: 5, slip: 2, ..RrlConfig::default() });
    let t0 = Instant::now();
    let ip = IpAddr::from([192, 0, 2, 1]);
    let verdicts: Vec<RrlVerdict> = (0..9).map(|_| rrl.check(ip, t0)).collect();
    assert_eq!(&verdicts[..5], [RrlVerdict::Send; 5]);
    assert_eq!(&verdicts[5..], [RrlVerdict::Drop, RrlVerdict::Slip, RrlVerdict::Drop, RrlVerdict::Slip]);
    // The same /24 shares the bucket; another network does not.
    assert_ne!(rrl.check(IpAddr::from([192, 0, 2, 200]), t0), RrlVerdict::Send);
    assert_eq!(rrl.check(IpAddr::from([192, 0, 3, 1]), t0), RrlVerdict::Send);
    // 100 ms refill one token at 10/s.
    assert_eq!(rrl.check(ip, t0 + Duration::from_millis(100)), RrlVerdict::Send);
}

#[test]
fn rrl_zero_rate_disables_the_limit() {
    let mut rrl = Rrl::new(RrlConfig { responses_per_second: 0, ..RrlConfig::default() });
    let t0 = Instant::now();
    assert!((0..1000).all(|_| rrl.check(IpAddr::from([10, 0, 0, 1]), t0) == RrlVerdict::Send));
}

#[test]
fn garbage_gets_no_answer_and_no_panic() {
    let h = Handler::new(Zones::default(), 1232);
    let src = SocketAddr::from(([127, 0, 0, 1], 5353));
    for p in [&[][..], &[0u8; 11][..], &[0xffu8; 300][..], &[0u8; 12][..]] {
        assert!(answer_datagram(&h, None, p, src, Instant::now()).is_none());
    }
    assert_eq!(h.stats().malformed_dropped, 4);
}
