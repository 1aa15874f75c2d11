//! `state.presence {state, path, value, if_version?}`: `set_in`, and bind the path to the
//! calling session. When the session ends, for any reason, the store removes
//! the path — unless a newer session has bound it since. A session may hold
//! at most `--max-presence-paths` paths.

use sodp_proto::{pointer, Value};

use super::{parse_path, set_in, Args, Context, Method, Reply, Target};
use crate::error::Rejection;

pub(super) struct Presence {
    target: Target,
    path: String,
    value: Value,
}

impl Method for Presence {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        Ok(Presence {
            target: Target::parse(args)?,
            path: args.string("path")?,
            value: args.value("value")?,
        })
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let Presence {
            target,
            path,
            value,
        } = self;
        cx.check_writable(&target.key)?;
        let key = &target.key;
        let segments = parse_path(&path)?;
        let normalised = pointer::format(&segments);
        if segments.is_empty() {
            return Err(Rejection::bad_request(
                "presence needs a path below the root, e.g. \"/alice\"",
            ));
        }
        let max = cx.shared.config.limits.max_presence_paths;
        if !cx.holdings.holds_presence(key, &normalised) && cx.holdings.presence_count() >= max {
            return Err(Rejection::bad_request(format!(
                "presence limit reached: a session may hold at most {max} presence paths"
            )));
        }
        let session = cx.session;
        let written = target.write_checked(cx, |doc| {
            set_in::apply(doc, &normalised, &segments, value)
                .map(|edit| edit.bind_presence(normalised.clone(), session))
        })?;
        cx.holdings.hold_presence(target.key, normalised);
        Ok(Reply::Written(written))
    }
}
