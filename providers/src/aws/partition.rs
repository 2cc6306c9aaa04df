//! AWS partitions, ARNs and endpoint resolution. China regions (`cn-north-1`, `cn-northwest-1`)
//! live in the `aws-cn` partition: different ARN prefix, DNS suffix and image owners.

use crate::{CloudError, CloudResult};

use super::PROVIDER;

/// A partition as kprov needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub name: &'static str,
    /// DNS suffix of public endpoints.
    pub dns_suffix: &'static str,
    /// Canonical's account publishing Ubuntu images in this partition.
    pub canonical_owner: &'static str,
    /// A region that always exists in the partition: `DescribeRegions` is asked there, since a
    /// mistyped region has no endpoint to ask.
    pub anchor_region: &'static str,
}

/// The commercial partition.
pub const AWS: Partition = Partition {
    name: "aws",
    dns_suffix: "amazonaws.com",
    canonical_owner: "099720109477",
    anchor_region: "us-east-1",
};
/// The China partition (Beijing `cn-north-1`, Ningxia `cn-northwest-1`).
pub const AWS_CN: Partition = Partition {
    name: "aws-cn",
    dns_suffix: "amazonaws.com.cn",
    canonical_owner: "837727238323",
    anchor_region: "cn-north-1",
};
/// The GovCloud partition.
pub const AWS_US_GOV: Partition = Partition {
    name: "aws-us-gov",
    dns_suffix: "amazonaws.com",
    canonical_owner: "513442679011",
    anchor_region: "us-gov-west-1",
};

/// The partition of a region, by the same prefixes the SDK's partition table uses.
pub fn partition_for(region: &str) -> Partition {
    if region.starts_with("cn-") {
        AWS_CN
    } else if region.starts_with("us-gov-") {
        AWS_US_GOV
    } else {
        AWS
    }
}

/// `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`, with the partition taken from `region`.
pub fn arn(service: &str, region: &str, account: &str, resource: &str) -> String {
    format!(
        "arn:{}:{service}:{region}:{account}:{resource}",
        partition_for(region).name
    )
}

/// The EC2 endpoint the SDK would call for `region`, resolved by the SDK's own endpoint rules
/// without sending anything.
pub async fn ec2_endpoint(region: &str) -> CloudResult<String> {
    use aws_sdk_ec2::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
    let params = Params::builder()
        .region(region)
        .build()
        .map_err(|e| protocol(format!("EC2 endpoint parameters: {e}")))?;
    let ep = DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(|e| protocol(format!("no EC2 endpoint for region {region}: {e}")))?;
    Ok(ep.url().to_string())
}

/// The ELBv2 endpoint the SDK would call for `region` (see [`ec2_endpoint`]).
pub async fn elb_endpoint(region: &str) -> CloudResult<String> {
    use aws_sdk_elasticloadbalancingv2::config::endpoint::{
        DefaultResolver, Params, ResolveEndpoint,
    };
    let params = Params::builder()
        .region(region)
        .build()
        .map_err(|e| protocol(format!("ELB endpoint parameters: {e}")))?;
    let ep = DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(|e| protocol(format!("no ELB endpoint for region {region}: {e}")))?;
    Ok(ep.url().to_string())
}

fn protocol(message: String) -> CloudError {
    CloudError::Protocol {
        provider: PROVIDER,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn china_regions_are_aws_cn() {
        for r in ["cn-north-1", "cn-northwest-1"] {
            assert_eq!(partition_for(r).name, "aws-cn");
            assert_eq!(partition_for(r).dns_suffix, "amazonaws.com.cn");
        }
        assert_eq!(partition_for("us-east-1").name, "aws");
        assert_eq!(partition_for("us-gov-west-1").name, "aws-us-gov");
    }

    #[test]
    fn arns_carry_the_partition() {
        assert_eq!(
            arn("ec2", "cn-north-1", "123456789012", "instance/i-0abc"),
            "arn:aws-cn:ec2:cn-north-1:123456789012:instance/i-0abc"
        );
        assert_eq!(
            arn(
                "elasticloadbalancing",
                "us-east-1",
                "123456789012",
                "loadbalancer/net/x/1"
            ),
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/x/1"
        );
    }

    #[tokio::test]
    async fn sdk_resolves_china_endpoints_without_calling_out() {
        assert_eq!(
            ec2_endpoint("cn-north-1").await.unwrap(),
            "https://ec2.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            ec2_endpoint("cn-northwest-1").await.unwrap(),
            "https://ec2.cn-northwest-1.amazonaws.com.cn"
        );
        assert_eq!(
            ec2_endpoint("us-east-1").await.unwrap(),
            "https://ec2.us-east-1.amazonaws.com"
        );
        assert_eq!(
            elb_endpoint("cn-north-1").await.unwrap(),
            "https://elasticloadbalancing.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            elb_endpoint("us-east-1").await.unwrap(),
            "https://elasticloadbalancing.us-east-1.amazonaws.com"
        );
    }
}
