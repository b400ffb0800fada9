//! The one way out of the state machine: attempts to dispatch, wake-ups and the single answer
//! are pushed here, and handed to the host at the end of each step.

use super::{Action, Dispatch};
use crate::render::Response;
use crate::time::Instant;

/// The actions of the current step, and whether the client has been answered.
#[derive(Debug, Default)]
pub struct Outbox {
    actions: Vec<Action>,
    answered: bool,
}

impl Outbox {
    /// An attempt to send; ignored once the request is answered.
    pub fn dispatch(&mut self, dispatch: Dispatch) {
        if !self.answered {
            self.actions.push(Action::Dispatch(dispatch));
        }
    }

    /// A wake-up to schedule; ignored once the request is answered.
    pub fn wake_at(&mut self, at: Instant) {
        if !self.answered {
            self.actions.push(Action::WakeAt(at));
        }
    }

    /// The answer, once: it replaces what this step had queued (nothing else is sent once the
    /// client has its answer), and every later push is ignored.
    pub fn respond(&mut self, response: Response) {
        if self.answered {
            return;
        }
        self.answered = true;
        self.actions.clear();
        self.actions.push(Action::Respond(response));
    }

    pub fn answered(&self) -> bool {
        self.answered
    }

    /// The actions of the step, in the order they were pushed.
    pub fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }
}
