pub struct Pipeline;
