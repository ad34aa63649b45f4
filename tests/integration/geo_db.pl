#!/usr/bin/perl
# Writes a small GeoIP2-City-style MaxMind DB for the integration tests
# (Debian's libmaxmind-db-writer-perl).
#
#   perl geo_db.pl OUT.mmdb        198.51.100.0/24  DE / BE (Berlin) / Berlin
#                                  203.0.113.0/24   US / CA (California) /
#                                                   San Francisco
#                                  2001:db8:1::/48  FR / IDF / Paris
#                                  192.0.2.0/24     not in the DB (unknown)
#   perl geo_db.pl OUT.mmdb alt    the same, but 198.51.100.0/24 is
#                                  AT / 9 (Wien) / Vienna (the reload test)
#
# The tree is IPv6 with alias_ipv6_to_ipv4, so IPv4 addresses are found by
# libmaxminddb (under ::/96 and the ::ffff:0:0/96 alias) as in GeoLite2.

use strict;
use warnings;

use MaxMind::DB::Writer::Tree;

my ($out, $variant) = @ARGV;
die "usage: $0 OUT.mmdb [alt]\n" unless defined $out;
$variant //= '';
die "unknown variant '$variant' (only 'alt')\n"
    if $variant ne '' && $variant ne 'alt';

my %types = (
    country      => 'map',
    subdivisions => ['array', 'map'],
    city         => 'map',
    iso_code     => 'utf8_string',
    names        => 'map',
    en           => 'utf8_string',
);

sub record {
    my ($country, $country_name, $region, $region_name, $city) = @_;
    return {
        country      => { iso_code => $country, names => { en => $country_name } },
        subdivisions => [ { iso_code => $region, names => { en => $region_name } } ],
        city         => { names => { en => $city } },
    };
}

my $tree = MaxMind::DB::Writer::Tree->new(
    database_type           => 'GeoIP2-City',
    description             => { en => 'ngx_cdp integration test geo database' },
    languages               => ['en'],
    ip_version              => 6,
    record_size             => 24,
    alias_ipv6_to_ipv4      => 1,
    remove_reserved_networks => 0,    # the test ranges are documentation ones
    map_key_type_callback   => sub { $types{ $_[0] } },
);

my @nets = (
    [ '198.51.100.0/24', $variant eq 'alt'
        ? record('AT', 'Austria', '9', 'Wien', 'Vienna')
        : record('DE', 'Germany', 'BE', 'Berlin', 'Berlin') ],
    [ '203.0.113.0/24',
        record('US', 'United States', 'CA', 'California', 'San Francisco') ],
    [ '2001:db8:1::/48',
        record('FR', 'France', 'IDF', 'Ile-de-France', 'Paris') ],
);

for my $n (@nets) {
    $tree->insert_network($n->[0], $n->[1]);
}

my $tmp = "$out.tmp.$$";
open my $fh, '>:raw', $tmp or die "cannot write $tmp: $!\n";
$tree->write_tree($fh);
close $fh or die "cannot write $tmp: $!\n";
rename $tmp, $out or die "cannot rename $tmp to $out: $!\n";
