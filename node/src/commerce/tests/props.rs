//! Property tests of stock, coupons and promotions.
